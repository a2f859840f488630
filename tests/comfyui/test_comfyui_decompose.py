"""QR-LoRA Decompose on real ComfyUI models: preset coverage, cache hits, base weights before patches, fp8."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

from comfy_env import random_delta, tiny_model


def run(pack, model, rank=4, preset="paper", regex="", method="fast", cache=True):
    out = pack.node("QRLoRADecompose").execute(model, rank, preset, regex, method, cache)
    return out[0], out[1], out.ui["text"][0]


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "sd3", "flux"])
def test_decompose_covers_the_preset_and_second_run_hits_the_cache(pack, arch):
    qr_core = pack.module("qr_core")
    model = tiny_model(arch, seed=11)
    basis, passthrough, text = run(pack, model)
    assert passthrough is model
    shapes = pack.module("nodes.services.model_weights").model_shapes(model)
    assert basis.arch == arch
    assert basis.targets.names() == qr_core.select_targets(shapes, "paper").names()
    assert "cache miss" in text
    for t in basis.targets:  # orthonormal Q of the right shape
        q = basis.q[t.name]
        assert q.shape == (t.size if t.is_slice else shapes[t.key][0], 4)
        assert torch.allclose(q.T @ q, torch.eye(4), atol=1e-4)
    again, _, text2 = run(pack, model)
    assert again.cache_status == "hit" and "cache hit" in text2
    assert again.fingerprint == basis.fingerprint


def test_decompose_sends_its_cache_state_as_data(pack):
    """The front-end panel reads these values (js/qr_lora.js), not the display text."""
    model = tiny_model("sd15", seed=12)
    node = pack.node("QRLoRADecompose")
    first = node.execute(model, 4, "paper", "", "fast", True).ui["qr_lora_basis"][0]
    second = node.execute(model, 4, "paper", "", "fast", True).ui["qr_lora_basis"][0]
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert first["rank"] == 4 and first["method"] == "fast" and first["seconds"] >= 0
    assert first["targets"].startswith("sd15") and "targets" in first["targets"]


def test_fused_weights_are_split_into_q_k_v_slices(pack):
    basis, _, _ = run(pack, tiny_model("flux"), cache=False)
    names = basis.targets.names()
    for part in ("q", "k", "v"):
        assert f"double_blocks.0.img_attn.qkv[{part}]" in names
        assert f"double_blocks.0.txt_attn.qkv[{part}]" in names
        assert f"single_blocks.0.linear1[{part}]" in names
    sd3 = run(pack, tiny_model("sd3"), cache=False)[0]
    assert "joint_blocks.0.x_block.attn.qkv[q]" in sd3.targets.names()
    assert "joint_blocks.1.context_block.attn.proj" not in sd3.targets.names()  # pre_only: no projection


def test_custom_regex_and_bad_regex(pack):
    basis, _, _ = run(pack, tiny_model("sd15"), preset="custom", regex=r"attn1\.to_q", cache=False)
    assert basis.targets.names() and all("attn1.to_q" in n for n in basis.targets.names())
    with pytest.raises(pack.module("qr_core").TargetError, match="regular expression"):
        run(pack, tiny_model("sd15"), preset="custom", regex="(", cache=False)


def test_decompose_reads_base_weights_before_patches(pack):
    model = tiny_model("sd15", seed=3)
    basis, _, _ = run(pack, model, cache=False)
    merged = pack.node("QRLoRAMergeDeltas").execute(
        model, content=random_delta(pack, basis, 1, "c", scale=1.0), style=random_delta(pack, basis, 2, "s"),
        lambda_content=1.0, lambda_style=1.0, lambda_extra_1=1.0, lambda_extra_2=1.0, allow_mixed_bases=False)[0]
    merged.patch_model()  # weights now hold W + QΔR in place
    try:
        again, _, _ = run(pack, merged, cache=False)
    finally:
        merged.unpatch_model()
    assert again.fingerprint == basis.fingerprint


def test_fp8_weights_are_read_as_stored_and_decomposed_in_fp32(pack):
    get_weight = pack.module("nodes.services.model_weights").base_weight_getter
    fp32 = tiny_model("flux", seed=5)
    fp8 = tiny_model("flux", seed=5, dtype=torch.float8_e4m3fn)
    key = "double_blocks.0.img_attn.qkv.weight"
    stored = fp8.model.diffusion_model.state_dict()[key]
    assert stored.dtype == torch.float8_e4m3fn
    got = get_weight(fp8)(key)
    assert got.dtype == torch.float8_e4m3fn and torch.equal(got.float(), stored.float())
    assert torch.allclose(got.float(), get_weight(fp32)(key), rtol=0.07, atol=2e-3)
    basis, _, _ = run(pack, fp8, cache=False)
    reference, _, _ = run(pack, fp32, cache=False)
    name = "double_blocks.0.img_attn.qkv[k]"
    # The same subspace up to fp8 rounding of the weights: ‖QᵀQ_ref‖²/rank near 1 (measured 0.999).
    overlap = float((basis.q[name].T @ reference.q[name]).square().sum()) / basis.rank
    assert overlap > 0.9, overlap
