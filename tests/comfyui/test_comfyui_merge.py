"""Merge ΔR patches W + Q(λc ΔRc + λs ΔRs) through ModelPatcher; Export gives the same through stock LoRA loading."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import nodes

from comfy_env import diffusion_weights, random_delta, tiny_model


def decompose(pack, model, rank=4, preset="paper"):
    return pack.node("QRLoRADecompose").execute(model, rank, preset, "", "fast", False)[0]


def merge_node(pack, model, content, style, lc, ls, **extra):
    kwargs = {"lambda_extra_1": 1.0, "lambda_extra_2": 1.0, "allow_mixed_bases": False, **extra}
    return pack.node("QRLoRAMergeDeltas").execute(model, content=content, style=style, lambda_content=lc,
                                                  lambda_style=ls, **kwargs)[0]


def patched_weights(patcher) -> dict[str, torch.Tensor]:
    """The weights ComfyUI computes for sampling: patch in place, read, unpatch."""
    patcher.patch_model()
    try:
        return diffusion_weights(patcher)
    finally:
        patcher.unpatch_model()


def expected(original, deltas, weights):
    out = {k: v.clone() for k, v in original.items()}
    for t in deltas[0].targets:
        update = sum(w * (d.q[t.name] @ d.delta[t.name]) for d, w in zip(deltas, weights))
        w = out[t.key]
        rows = t.rows(w.shape[0])
        w[rows] = (w[rows].float() + update).to(w.dtype)
    return out


@pytest.mark.parametrize("arch", ["sd15", "sd3", "flux"])
def test_merge_patches_exactly_and_unpatch_restores(pack, arch):
    model = tiny_model(arch)
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "content"), random_delta(pack, basis, 2, "style")
    original = diffusion_weights(model)
    merged = merge_node(pack, model, content, style, 0.7, -1.3)
    assert not model.patches, "the input model was modified"
    got = patched_weights(merged)
    want = expected(original, [content, style], [0.7, -1.3])
    touched = set(basis.targets.shapes)
    for k in original:
        if k in touched:
            assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-5), k
            assert not torch.equal(got[k], original[k]), k
        else:
            assert torch.equal(got[k], original[k]), f"untouched weight {k} changed"
    after = diffusion_weights(model)
    assert all(torch.equal(after[k], original[k]) for k in original), "unpatching did not restore the weights"


def test_fused_targets_become_row_slice_patches(pack):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    merged = merge_node(pack, model, random_delta(pack, basis, 1, "c"), random_delta(pack, basis, 2, "s"), 1.0, 1.0)
    qkv = merged.patches["diffusion_model.double_blocks.0.img_attn.qkv.weight"]
    assert sorted(p[3] for p in qkv) == [(0, 0, 64), (0, 64, 64), (0, 128, 64)]


def test_n_way_merge_with_extra_delta(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    ds = [random_delta(pack, basis, i, f"d{i}") for i in range(3)]
    original = diffusion_weights(model)
    merged = merge_node(pack, model, ds[0], ds[1], 0.5, 1.0, extra_1=ds[2], lambda_extra_1=-0.25)
    got, want = patched_weights(merged), expected(original, ds, [0.5, 1.0, -0.25])
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in basis.targets.shapes)


@pytest.mark.parametrize("naming", ["kohya", "comfyui"])
@pytest.mark.parametrize("arch", ["sd15", "sdxl", "sd3", "flux"])
def test_exported_lora_through_stock_loader_equals_merge(pack, comfy_root, caplog, arch, naming):
    """Export → LoraLoaderModelOnly gives Merge's weights, every key of the file loaded (ComfyUI warns
    'lora key not loaded' for any it cannot place)."""
    model = tiny_model(arch)
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "content"), random_delta(pack, basis, 2, "style")
    merged = patched_weights(merge_node(pack, model, content, style, 0.8, 0.6))
    name = f"export_{arch}_{naming}"
    pack.node("QRLoRAExportLoRA").execute(content=content, style=style, lambda_content=0.8, lambda_style=0.6,
                                          lambda_extra_1=1.0, lambda_extra_2=1.0, allow_mixed_bases=False,
                                          lora_name=name, naming=naming, dtype="fp32")
    assert (comfy_root / "models" / "loras" / f"{name}.safetensors").is_file()
    with caplog.at_level("WARNING"):
        loaded = nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"{name}.safetensors", 1.0)[0]
    assert not [r.getMessage() for r in caplog.records if "not loaded" in r.getMessage()]
    assert set(loaded.patches) == {f"diffusion_model.{k}" for k in basis.targets.shapes}
    stock = patched_weights(loaded)
    for k in merged:
        assert torch.allclose(stock[k], merged[k], atol=1e-6, rtol=1e-5), k


def test_export_node_defaults_to_the_naming_for_sharing(pack):
    """kohya loads in ComfyUI and (for SDXL and FLUX) in diffusers; the tooltip says which loads where."""
    inputs = pack.node("QRLoRAExportLoRA").INPUT_TYPES()["required"]
    _, extra = inputs["naming"]
    assert extra["options"] == ["comfyui", "kohya"] and extra["default"] == "kohya"
    assert all(word in extra["tooltip"] for word in ("ComfyUI", "diffusers", "A1111", "SD3"))


def test_a_key_the_stock_loader_cannot_place_is_seen(pack, comfy_root, caplog):
    """The 'every key loaded' check above can fail: ComfyUI names a key it leaves out."""
    from safetensors.torch import load_file, save_file

    model = tiny_model("sd15")
    content = random_delta(pack, decompose(pack, model), 1, "content")
    pack.node("QRLoRAExportLoRA").execute(content=content, style=content, lambda_content=1.0, lambda_style=0.0,
                                          lambda_extra_1=1.0, lambda_extra_2=1.0, allow_mixed_bases=False,
                                          lora_name="export_extra_key", naming="kohya", dtype="fp16")
    path = comfy_root / "models" / "loras" / "export_extra_key.safetensors"
    lora = load_file(str(path))
    lora["lora_unet_no_such_block.lora_up.weight"], lora["lora_unet_no_such_block.lora_down.weight"] = torch.ones(1, 1), torch.ones(1, 1)
    save_file(lora, str(path))
    with caplog.at_level("WARNING"):
        nodes.LoraLoaderModelOnly().load_lora_model_only(model, "export_extra_key.safetensors", 1.0)
    assert any("not loaded" in r.getMessage() and "no_such_block" in r.getMessage() for r in caplog.records)


def test_merge_of_different_bases_is_refused_unless_allowed(pack):
    model = tiny_model("sd15")
    a = decompose(pack, model, rank=4)
    b = pack.node("QRLoRADecompose").execute(model, 4, "custom", r"attn1\.to_q", "exact", False)[0]
    da, db = random_delta(pack, a, 1, "a"), random_delta(pack, b, 2, "b")
    with pytest.raises(pack.module("qr_core").BasisMismatchError, match="different bases"):
        merge_node(pack, model, da, db, 1.0, 1.0)
    original = diffusion_weights(model)
    got = patched_weights(merge_node(pack, model, da, db, 1.0, 1.0, allow_mixed_bases=True))
    t = b.targets.targets[0]
    want = original[t.key] + da.q[t.name] @ da.delta[t.name] + db.q[t.name] @ db.delta[t.name]
    assert torch.allclose(got[t.key], want, atol=1e-6)


def test_similarity_heatmap_and_summary(pack):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    a, b = random_delta(pack, basis, 1, "a"), random_delta(pack, basis, 2, "b")
    image, text = pack.node("QRLoRADeltaSimilarity").execute(a, b)[:2]
    assert image.ndim == 4 and image.shape[-1] == 3 and 0 <= float(image.min()) and float(image.max()) <= 1
    assert "max" in text and "mean" in text and "min" in text
    same = pack.node("QRLoRADeltaSimilarity").execute(a, a)[1]
    assert "max 1.0000" in same and "min 1.0000" in same
