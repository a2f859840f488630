"""λ per block: Merge scales each block group's ΔR exactly, Export writes the same as a stock LoRA, bad names list the groups."""

from __future__ import annotations

import json

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import nodes

from comfy_env import diffusion_weights, random_delta, tiny_model

PROFILES = {  # (content profile, style profile, the content factor of a key, the style factor of a key)
    "sdxl": ("input=1.5, middle=0.5, output=0", "output=2, input.3=-1",
             lambda k: 1.5 if k.startswith("input_blocks") else 0.5 if k.startswith("middle_block") else 0.0,
             lambda k: 2.0 if k.startswith("output_blocks") else -1.0 if k.startswith("input_blocks.3.") else 1.0),
    "flux": ("double=0.25", "single=3, double.1=0",
             lambda k: 0.25 if k.startswith("double_blocks") else 1.0,
             lambda k: 3.0 if k.startswith("single_blocks") else 0.0 if k.startswith("double_blocks.1.") else 1.0),
}


def decompose(pack, model):
    return pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]


def mix(content, style, lc, ls, **extra):
    return {"content": content, "style": style, "lambda_content": lc, "lambda_style": ls, "lambda_extra_1": 1.0,
            "lambda_extra_2": 1.0, "allow_mixed_bases": False, **extra}


def patched_weights(patcher) -> dict[str, torch.Tensor]:
    patcher.patch_model()
    try:
        return diffusion_weights(patcher)
    finally:
        patcher.unpatch_model()


@pytest.mark.parametrize("arch", sorted(PROFILES))
def test_per_block_merge_is_exact_and_exports_as_the_same_stock_lora(pack, comfy_root, arch):
    model = tiny_model(arch, **({"depth": 2} if arch == "flux" else {}))  # FLUX: two double blocks for double.1
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "content"), random_delta(pack, basis, 2, "style")
    cprof, sprof, cf, sf = PROFILES[arch]
    blocks = {"block_lambda_content": cprof, "block_lambda_style": sprof}
    original = diffusion_weights(model)
    merged = patched_weights(pack.node("QRLoRAMergeDeltas").execute(model, **mix(content, style, 0.8, 0.6, **blocks))[0])
    want = {k: original[k].clone() for k in basis.targets.shapes}
    for t in basis.targets:
        want[t.key][t.rows(want[t.key].shape[0])] += (0.8 * cf(t.key) * content.q[t.name] @ content.delta[t.name]
                                                      + 0.6 * sf(t.key) * style.q[t.name] @ style.delta[t.name])
    for k, w in want.items():
        assert torch.allclose(merged[k], w, atol=1e-6, rtol=1e-5), k
    plain = patched_weights(pack.node("QRLoRAMergeDeltas").execute(model, **mix(content, style, 0.8, 0.6))[0])
    assert any(not torch.allclose(plain[k], merged[k]) for k in want), "the block profiles changed nothing"

    name = f"blocks_{arch}"
    pack.node("QRLoRAExportLoRA").execute(lora_name=name, naming="comfyui", dtype="fp32",
                                          **mix(content, style, 0.8, 0.6, **blocks))
    meta = pack.module("qr_core.files").read_header(comfy_root / "models" / "loras" / f"{name}.safetensors")[1]
    assert json.loads(meta["qr_lora_merge"])["sources"] == [f"content [blocks {cprof}]", f"style [blocks {sprof}]"]
    loaded = nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"{name}.safetensors", 1.0)[0]
    stock = patched_weights(loaded)
    for k in merged:
        assert torch.allclose(stock[k], merged[k], atol=1e-6, rtol=1e-5), k


def test_sd3_depth_thirds(pack):
    model = tiny_model("sd3", depth=3)
    basis = decompose(pack, model)
    d = random_delta(pack, basis, 1, "d")
    blocks = pack.module("qr_core.merging.blocks")
    count = 1 + max(int(t.key.split(".")[1]) for t in basis.targets)
    factors = blocks.block_factors(basis.targets, blocks.parse_block_profile("early=1, middle=2, late=3", "sd3"))
    for t in basis.targets:
        index = int(t.key.split(".")[1])
        assert factors[t.name] == 1 + min(int(3 * index / count), 2), (t.name, count)
    assert set(factors.values()) == {1.0, 2.0, 3.0}
    merged = patched_weights(pack.node("QRLoRAMergeDeltas").execute(
        model, **mix(d, d, 1.0, 0.0, block_lambda_content="late=0"))[0])
    original = diffusion_weights(model)
    last = f"joint_blocks.{count - 1}.x_block.attn.qkv.weight"
    assert torch.equal(merged[last], original[last])
    assert not torch.equal(merged["joint_blocks.0.x_block.attn.qkv.weight"], original["joint_blocks.0.x_block.attn.qkv.weight"])


@pytest.mark.parametrize("arch,text,match", [
    ("sdxl", "inputs=1", r"unknown block 'inputs'.*sdxl groups: input \(.*middle \(.*output \("),
    ("flux", "double=1, middle=0.5", r"unknown block 'middle'.*flux groups: double .*single"),
    ("sd3", "early=half", r"cannot read 'early=half'.*sd3 groups: early .*middle .*late"),
    ("flux", "double", r"cannot read 'double'"),
    ("flux", "double=1, double=2", "twice"),
    ("flux", "single.7=0", r"'single.7', but this model's 'single' group has blocks 0"),
])
def test_bad_block_profiles_list_the_groups(pack, arch, text, match):
    model = tiny_model(arch)
    basis = decompose(pack, model)
    d = random_delta(pack, basis, 1, "d")
    with pytest.raises(pack.module("qr_core").SettingError, match=match):
        pack.node("QRLoRAMergeDeltas").execute(model, **mix(d, d, 1.0, 1.0, block_lambda_style=text))
