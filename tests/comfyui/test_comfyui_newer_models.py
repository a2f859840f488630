"""The 2025 models (FLUX.2, Qwen-Image, Z-Image/Lumina 2, Chroma, Wan 2.1/2.2, HiDream) from detection to
exported LoRA, each on a tiny random-weight model built from ComfyUI's own classes through its detection.

One parametrized suite: the target set of the released layout, Decompose, training that lowers the loss and
changes only ΔR, Merge exactness with bit-exact unpatch, and Export → stock LoraLoaderModelOnly equal to Merge
with every key of the file loaded. A model this ComfyUI has no class for skips with that reason.
"""

from __future__ import annotations

import logging
import re
import sys

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import comfy_models
import torch

import comfy.lora
import comfy.model_management
import comfy.model_detection
import comfy.supported_models
import comfy.utils
import nodes

from comfy_env import CPU, TRAIN_DEFAULTS, diffusion_weights, previews_shown, random_delta
from test_comfyui_merge import expected, merge_node, patched_weights

# Most used first. Lumina 2 shares Z-Image's layout but has grouped-query attention (fewer k/v rows).
MODELS = ("flux2", "qwen_image", "zimage", "chroma", "wan21", "wan22", "hidream", "lumina2", "longcat", "ovis",
          "mage_flow", "ernie", "krea2", "anima")

# Targets of the released models' layouts (paper / attention / attention+mlp), counted by qr_core on the
# state dict ComfyUI builds from the released configs (FULL_SKETCHES); the README's table states them.
FULL_COUNTS = {
    "flux2": (240, 208, 336),  # FLUX.2-dev: 8 double, 48 single blocks, width 6144
    "qwen_image": (720, 480, 720),  # 60 dual-stream blocks, width 3072
    "zimage": (118, 136, 238),  # 30 layers + 2 noise + 2 context refiners, width 3840
    "chroma": (342, 266, 418),  # FLUX.1's 19 double + 38 single blocks
    "wan21": (320, 320, 400),  # Wan 2.1/2.2 14B: 40 blocks, width 5120
    "wan22": (240, 240, 300),  # Wan 2.2 TI2V 5B: 30 blocks, width 3072
    "hidream": (512, 256, 1024),  # HiDream-I1: 16 dual + 32 single blocks, 4 routed experts + 1 shared
    "lumina2": (106, 120, 210),  # Lumina Image 2.0: 26 layers + 2 + 2 refiners, width 2304
    "flux2_klein": (120, 100, 160),  # FLUX.2 [klein] 4B: 5 double, 20 single blocks, width 3072
    "longcat": (180, 140, 220),  # LongCat-Image: 10 double, 20 single blocks, width 3072
    "ovis": (165, 129, 219),  # Ovis-Image: 6 double, 27 single blocks (gated MLPs), width 3072
    "mage_flow": (144, 96, 144),  # 12 dual-stream blocks (ComfyUI's default), width 3072
    "ernie": (108, 144, 252),  # ERNIE-Image: 36 layers, width 4096 (ComfyUI's defaults)
    "anima": (224, 224, 280),  # Anima (Cosmos-Predict2 2B): 28 blocks, width 2048
    "krea2": (116, 160, 256),  # Krea 2: 28 blocks + 2 + 2 text-fusion blocks, width 6144 (ComfyUI's defaults)
    "ltx2": (384, 1152, 1344),  # LTX-2: 48 audio+video blocks, video width 4096, audio 2048 (ComfyUI's defaults)
}
FULL_SKETCHES = {
    "flux2": dict(comfy_models.NEWER_CONFIGS["flux2"], in_channels=128, out_channels=128, context_in_dim=15360,
                  hidden_size=6144, num_heads=48, depth=8, depth_single_blocks=48, axes_dim=[32, 32, 32, 32]),
    "qwen_image": dict(image_model="qwen_image", in_channels=64, num_layers=60),
    "zimage": dict(comfy_models.NEWER_CONFIGS["zimage"], dim=3840, cap_feat_dim=2560, n_layers=30, n_refiner_layers=2,
                   n_heads=30, n_kv_heads=30, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], multiple_of=256),
    "chroma": dict(comfy_models.NEWER_CONFIGS["chroma"], context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                   num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], out_dim=3072,
                   hidden_dim=5120, n_layers=5),
    "wan21": dict(comfy_models.NEWER_CONFIGS["wan21"], dim=5120, ffn_dim=13824, text_dim=4096, num_heads=40,
                  num_layers=40),
    "wan22": dict(comfy_models.NEWER_CONFIGS["wan22"], dim=3072, ffn_dim=14336, text_dim=4096, num_heads=24,
                  num_layers=30),
    "hidream": dict(image_model="hidream", patch_size=2, in_channels=16, out_channels=None, num_layers=16,
                    num_single_layers=32, attention_head_dim=128, num_attention_heads=20, caption_channels=[4096, 4096],
                    text_emb_dim=2048, num_routed_experts=4, num_activated_experts=2, axes_dims_rope=(64, 32, 32),
                    max_resolution=(128, 128), llama_layers=list(range(32)) + [31] * 16),
    "lumina2": dict(comfy_models.NEWER_CONFIGS["lumina2"], dim=2304, cap_feat_dim=2304, n_layers=26,
                    n_refiner_layers=2, n_heads=24, n_kv_heads=8, axes_dims=[32, 32, 32], multiple_of=256),
    "flux2_klein": dict(comfy_models.NEWER_CONFIGS["flux2"], context_in_dim=7680, hidden_size=3072, num_heads=24,
                        depth=5, depth_single_blocks=20, axes_dim=[32, 32, 32, 32], guidance_embed=False),
    "longcat": dict(comfy_models.NEWER_CONFIGS["longcat"], hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=10,
                    depth_single_blocks=20, axes_dim=[16, 56, 56]),
    "ovis": dict(comfy_models.NEWER_CONFIGS["ovis"], context_in_dim=2048, hidden_size=3072, mlp_ratio=4.0,
                 num_heads=24, depth=6, depth_single_blocks=27, axes_dim=[16, 56, 56]),
    # ComfyUI's detection reads only the block count (and Ernie nothing): the rest are its classes' defaults.
    "mage_flow": dict(image_model="mage_flow", in_channels=128, out_channels=128, num_layers=12),
    "ernie": dict(image_model="ernie"),
    "krea2": dict(image_model="krea2"),
    "ltx2": dict(image_model="ltxav"),
    "anima": dict(comfy_models.NEWER_CONFIGS["anima"], model_channels=2048, num_blocks=28, num_heads=16, mlp_ratio=4.0,
                  crossattn_emb_channels=1024, adaln_lora_dim=256),
}
# FLUX.2 [klein] is FLUX.2's class at another size: only its layout is counted here.
LAYOUTS = tuple(FULL_SKETCHES)
MODEL_OF_LAYOUT = {"flux2_klein": "flux2"}
# Latent channels and whether latents have a time axis (video: [B, C, T, H, W]).
LATENTS = {"flux2": (128, False), "qwen_image": (16, False), "zimage": (16, False), "chroma": (16, False),
           "wan21": (16, True), "wan22": (48, True), "hidream": (16, False), "lumina2": (16, False),
           "longcat": (16, False), "ovis": (16, False), "mage_flow": (128, False), "ernie": (128, False),
           "krea2": (16, False), "anima": (16, True)}
# Text width where the tests' 32 is not the model's: detection tells these models apart by it.
CONTEXT = {"longcat": 3584, "mage_flow": 2560}


def needs_class(name: str):
    if why := comfy_models.missing_class(name):
        pytest.skip(f"ComfyUI {comfy_env_version()} cannot build {name}: {why}")


def comfy_env_version() -> str:
    import comfyui_version

    return comfyui_version.__version__


# Weights whose output the model discards: the last dual-stream block's text-side query, output and MLP
# (Qwen-Image's text stream ends there, in the released model too). Their ΔR get no gradient.
DEAD = {"qwen_image": r"^transformer_blocks\.1\.(attn\.add_q_proj|attn\.to_add_out|txt_mlp\.)"}
DEAD["mage_flow"] = DEAD["qwen_image"]  # Qwen-Image's blocks


def tiny(name: str, seed: int = 0, dtype=torch.float32, compute_dtype=None):
    """The tiny model (RMSNorm scales at 1, as trained models have them near: see comfy_models.random_model)."""
    needs_class(name)
    return comfy_models.random_model(comfy_models.model_config(name, "tiny", dtype, compute_dtype), CPU, seed)


def latent_and_cond(name: str, copies: int = 1, seed: int = 0):
    """A fixed latent (with a time axis for video models) and conditioning as the model's text encoder gives it."""
    channels, video = LATENTS[name]
    g = torch.Generator().manual_seed(seed)
    shape = (1, channels, 2, 8, 8) if video else (1, channels, 8, 8)
    with torch.inference_mode():
        latent = torch.randn(shape, generator=g).repeat(copies, *([1] * (len(shape) - 1)))
        context = torch.randn(1, 6, CONTEXT.get(name, 32), generator=g)
        extra = {}
        if name == "hidream":  # pooled CLIP vector and the Llama layers' hidden states, one per llama_layers entry
            extra["pooled_output"] = torch.randn(1, 32, generator=g)
            extra["conditioning_llama3"] = torch.randn(1, 2, 6, 32, generator=g)
        if name in ("flux2", "chroma", "ovis", "longcat"):  # FLUX's conditioning reads a pooled vector these lack
            extra["pooled_output"] = None
        if name == "flux2":
            extra["guidance"] = 4.0
        if name in ("zimage", "lumina2"):  # their LLM encoders give the mask (ComfyUI 0.3.64 needs it)
            extra["attention_mask"] = torch.ones(1, 6, dtype=torch.long)
    return {"samples": latent}, [[context, extra]]


def train(pack, model, basis, name, copies=1, **overrides):
    latent, cond = latent_and_cond(name, copies)
    kwargs = dict(TRAIN_DEFAULTS, **overrides)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return pack.node("QRLoRATrainDelta").execute(model, basis, latent, cond, **kwargs)


def probe_loss(pack, model, basis, name, delta=None, steps=4) -> float:
    """Mean loss over a fixed sequence of (noise, σ) with ΔR held where it starts (learning rate 1e-12)."""
    out = train(pack, model, basis, name, copies=4, steps=steps, learning_rate=1e-12, seed=123, resume=delta,
                batch_size=4)
    return sum(out[2]["loss"]) / steps


def released_layout(name: str) -> dict:
    """The meta state dict of the released model `name` (a LAYOUTS entry), through ComfyUI's detection."""
    model = MODEL_OF_LAYOUT.get(name, name)
    needs_class(model)
    model_class = getattr(comfy.supported_models, comfy_models.CLASSES[model])
    return comfy_models._meta_layout(comfy_models.detected_unet_config(model, FULL_SKETCHES[name]), model_class, {})


@pytest.mark.parametrize("name", LAYOUTS)
def test_released_layout_is_detected_and_its_target_set_counted(pack, name):
    qr_core = pack.module("qr_core")
    layout = released_layout(name)
    assert comfy.model_detection.detect_unet_config(layout, "")["image_model"] == FULL_SKETCHES[name]["image_model"]
    shapes = {k: tuple(v.shape) for k, v in layout.items()}
    # The key rules (the CLI's, without ComfyUI) agree with ComfyUI's identification of the loaded model.
    assert qr_core.detect_architecture(shapes) == comfy_models.NEWER_ARCH[MODEL_OF_LAYOUT.get(name, name)]
    counts = tuple(len(qr_core.select_targets(shapes, p)) for p in ("paper", "attention", "attention+mlp"))
    assert counts == FULL_COUNTS[name]
    for t in qr_core.select_targets(shapes, "attention+mlp"):  # every target a Linear of the layout, slices inside it
        rows, cols = shapes[t.key]
        assert len(shapes[t.key]) == 2 and (not t.is_slice or t.offset + t.size <= rows), t


@pytest.mark.parametrize("name", LAYOUTS)
def test_every_target_of_the_released_layout_has_a_block_group(pack, name):
    """λ per block covers the whole model: each target lies in one of the architecture's groups, none empty."""
    qr_core, blocks = pack.module("qr_core"), pack.module("qr_core.merging.blocks")
    layout = released_layout(name)
    targets = qr_core.select_targets({k: tuple(v.shape) for k, v in layout.items()}, "attention+mlp")
    groups = blocks.groups_for(targets.arch)
    counts = blocks._block_counts(targets, groups)
    where = {t.key: blocks.target_block(t.key, targets.arch, counts) for t in targets}
    assert None not in where.values(), [k for k, w in where.items() if w is None][:5]
    assert {w[0] for w in where.values()} == {g.name for g in groups}


@pytest.mark.parametrize("name", MODELS)
def test_decompose_train_merge_export(pack, comfy_root, name, caplog):
    arch = comfy_models.NEWER_ARCH[name]
    model = tiny(name)
    model_weights = pack.module("nodes.services.model_weights")
    shapes = model_weights.model_shapes(model)
    # ComfyUI's identification of the loaded model and the key rules name the same architecture.
    assert model_weights.core_model(model).classes[0] == comfy_models.CLASSES[name]
    assert pack.module("qr_core").detect_architecture(shapes, model_weights.core_model(model)) == arch
    assert pack.module("qr_core").detect_architecture(shapes) == arch
    basis = pack.node("QRLoRADecompose").execute(model, 4, "attention+mlp", "", "fast", False)[0]
    assert basis.arch == arch and len(basis.targets) == len(pack.module("qr_core").select_targets(shapes, "attention+mlp"))
    for t in basis.targets:
        q = basis.q[t.name]
        assert torch.allclose(q.T @ q, torch.eye(4), atol=1e-4), t.name

    # Training with the model's native objective lowers the loss on a fixed probe and touches only ΔR.
    before = diffusion_weights(model)
    kitchen = getattr(sys.modules.get("comfy.quant_ops"), "ck", None)  # ComfyUI ≥ 0.8
    kernels = dict(vars(kitchen)) if kitchen is not None else {}
    start = probe_loss(pack, model, basis, name)
    out = train(pack, model, basis, name, copies=4, batch_size=4, steps=8, learning_rate=2e-2)
    delta = out[0]
    end = probe_loss(pack, model, basis, name, delta)
    assert end < 0.99 * start, (start, end)  # measured end/start 0.45 (Chroma) to 0.97 (Z-Image)
    unchanged = [n for n, d in delta.delta.items() if float(d.abs().max()) == 0]
    assert not [n for n in unchanged if not (name in DEAD and re.match(DEAD[name], n))], unchanged
    after = diffusion_weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "a base weight changed"
    # comfy-kitchen's kernels (replaced by differentiable references for the run) are put back.
    assert kitchen is None or all(vars(kitchen)[k] is v for k, v in kernels.items())
    assert not model.patches
    comfy.model_management.unload_all_models()  # as the next sampling would: training left its clone loaded
    check_merge_and_export(pack, comfy_root, model, basis, delta, before, name, caplog)


def check_merge_and_export(pack, comfy_root, model, basis, content, before, name, caplog):
    """Merge is W + Q(λc ΔRc + λs ΔRs) exactly on the targets, nothing else, and unpatching restores every bit;
    Export → the stock loader: every key of the file maps to a weight, and the weights equal Merge's."""
    style = random_delta(pack, basis, 2, "style")
    merged = merge_node(pack, model, content, style, 0.8, 0.6)
    got = patched_weights(merged)
    want = expected(before, [content, style], [0.8, 0.6])
    touched = set(basis.targets.shapes)
    for k in before:
        if k in touched:
            assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-5), k
        else:
            assert torch.equal(got[k], before[k]), f"untouched weight {k} changed"
    restored = diffusion_weights(model)
    assert all(torch.equal(restored[k], before[k]) for k in before), "unpatching did not restore the weights"

    lora_name = f"newer_{name}"
    pack.node("QRLoRAExportLoRA").execute(content=content, style=style, lambda_content=0.8, lambda_style=0.6,
                                          lambda_extra_1=1.0, lambda_extra_2=1.0, allow_mixed_bases=False,
                                          lora_name=lora_name, naming="comfyui", dtype="fp32")
    path = comfy_root / "models" / "loras" / f"{lora_name}.safetensors"
    lora = comfy.utils.load_torch_file(str(path), safe_load=True)
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(model.model, {}))
    assert "lora key not loaded" not in caplog.text
    assert {str(k) for k in patches} == {f"diffusion_model.{k}" for k in touched}
    loaded = nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"{lora_name}.safetensors", 1.0)[0]
    stock = patched_weights(loaded)
    for k in got:
        assert torch.allclose(stock[k], got[k], atol=1e-6, rtol=1e-5), k


def test_ltx2_decompose_merge_export_and_training_refused(pack, comfy_root, caplog):
    """LTX-2 (ComfyUI's LTXAV): its presets, Merge and Export as for the other models; Train ΔR refuses it
    with the reason (packed audio+video latents) and the way out, before touching the model."""
    name = "ltx2"
    model = tiny(name)
    qr_core, model_weights = pack.module("qr_core"), pack.module("nodes.services.model_weights")
    shapes = model_weights.model_shapes(model)
    assert model_weights.core_model(model).classes[0] == "LTXAV"
    assert qr_core.detect_architecture(shapes, model_weights.core_model(model)) == "ltx2"
    assert qr_core.detect_architecture(shapes) == "ltx2"
    paper = qr_core.select_targets(shapes, "paper")
    assert paper.names() == [f"transformer_blocks.{n}.{a}.{p}" for n in range(2) for a in ("attn1", "attn2")
                             for p in ("to_q", "to_k", "to_v", "to_out.0")]  # the video stream's attentions
    basis = pack.node("QRLoRADecompose").execute(model, 4, "attention+mlp", "", "fast", False)[0]
    assert basis.arch == "ltx2" and basis.targets.names() == qr_core.select_targets(shapes, "attention+mlp").names()
    assert len(basis.targets) == 2 * (6 * 4 + 4)  # 6 attentions (video, audio, cross-modal) + 2 MLPs per block
    for t in basis.targets:
        q = basis.q[t.name]
        assert torch.allclose(q.T @ q, torch.eye(4), atol=1e-4), t.name
    before = diffusion_weights(model)
    content = random_delta(pack, basis, 1, "content")
    with pytest.raises(qr_core.RuntimeSupportError, match=r"cannot train LTX-2: .*packed together.*Decompose, "
                                                          r"Merge and Export work .*train its ΔR elsewhere"):
        train(pack, model, basis, "wan21", steps=1)  # a plain video latent: refused all the same
    assert not model.patches
    check_merge_and_export(pack, comfy_root, model, basis, content, before, name, caplog)


@pytest.mark.parametrize("name", ["lens"])
def test_a_model_comfyui_knows_and_the_pack_does_not_is_refused_with_comfyuis_name(pack, name):
    """Lens carries Qwen-Image's txt_norm: once taken for Qwen-Image, now refused by the presets with the
    class ComfyUI loaded it as, and still open to 'custom'."""
    model = tiny(name)
    qr_core, model_weights = pack.module("qr_core"), pack.module("nodes.services.model_weights")
    core = model_weights.core_model(model)
    assert core.classes[0] == comfy_models.CLASSES[name]
    shapes = model_weights.model_shapes(model)
    assert qr_core.detect_architecture(shapes, core) is None and qr_core.detect_architecture(shapes) is None
    with pytest.raises(qr_core.TargetError, match=f"ComfyUI identifies this model as {comfy_models.CLASSES[name]}"
                                                  r".*preset 'custom'"):
        pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)
    basis = pack.node("QRLoRADecompose").execute(model, 4, "custom", r"transformer_blocks\.0\.attn\.img_qkv", "fast",
                                                 False)[0]
    assert basis.targets.names() == ["transformer_blocks.0.attn.img_qkv"] and basis.arch == "unknown"


@pytest.mark.parametrize("name", ["flux2", "qwen_image", "wan21"])  # released as fp8 (Comfy-Org's repackaged files)
def test_fp8_checkpoint_basis_is_the_stored_weights_in_fp32(pack, name):
    """Load Diffusion Model with fp8 weights: Decompose reads the weights as stored (no cast to the compute
    dtype) and finds the fp32 model's subspace up to fp8 rounding; training casts per layer and keeps them."""
    fp8 = tiny(name, seed=5, dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    fp32 = tiny(name, seed=5)
    basis = pack.node("QRLoRADecompose").execute(fp8, 4, "paper", "", "fast", False)[0]
    reference = pack.node("QRLoRADecompose").execute(fp32, 4, "paper", "", "fast", False)[0]
    get = pack.module("nodes.services.model_weights").base_weight_getter(fp8)
    t = basis.targets.targets[0]
    stored = fp8.model.diffusion_model.state_dict()[t.key]
    assert stored.dtype == torch.float8_e4m3fn and torch.equal(get(t.key).float(), stored.float())
    for t in basis.targets:  # the same subspace up to fp8 rounding: ‖QᵀQ_ref‖²/rank near 1
        overlap = float((basis.q[t.name].T @ reference.q[t.name]).square().sum()) / basis.rank
        assert overlap > 0.9, (t.name, overlap)
    before = diffusion_weights(fp8)
    out = train(pack, fp8, basis, name, steps=2)
    assert all(torch.isfinite(torch.tensor(out[2]["loss"])))
    after = diffusion_weights(fp8)
    assert all(torch.equal(before[k].float(), after[k].float()) and before[k].dtype == after[k].dtype for k in before)


@pytest.mark.parametrize("name", ["qwen_image", "wan21", "flux2", "ltx2"])
def test_kohya_names_load_in_the_stock_loader(pack, comfy_root, name, caplog):
    """kohya's `lora_unet_<key with _>` names: ComfyUI maps them for every model from its own keys."""
    model = tiny(name)
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    content = random_delta(pack, basis, 1, "content")
    lora_name = f"newer_kohya_{name}"
    pack.node("QRLoRAExportLoRA").execute(content=content, style=None, lambda_content=1.0, lambda_style=1.0,
                                          lambda_extra_1=1.0, lambda_extra_2=1.0, allow_mixed_bases=False,
                                          lora_name=lora_name, naming="kohya", dtype="fp32")
    lora = comfy.utils.load_torch_file(str(comfy_root / "models" / "loras" / f"{lora_name}.safetensors"), safe_load=True)
    assert all(k.startswith("lora_unet_") for k in lora)
    with caplog.at_level(logging.WARNING):
        patches = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(model.model, {}))
    assert "lora key not loaded" not in caplog.text
    assert {str(k) for k in patches} == {f"diffusion_model.{k}" for k in basis.targets.shapes}
    merged = patched_weights(merge_node(pack, model, content, None, 1.0, 1.0))
    stock = patched_weights(nodes.LoraLoaderModelOnly().load_lora_model_only(model, f"{lora_name}.safetensors", 1.0)[0])
    assert all(torch.allclose(stock[k], merged[k], atol=1e-6, rtol=1e-5) for k in merged)


@pytest.mark.parametrize("name", ["flux2", "wan22"])
def test_previews_without_a_vae_are_cores_latent_to_rgb(pack, name):
    """Train ΔR's previews with previews off in ComfyUI and no VAE: latent-to-RGB built as core builds it.
    FLUX.2's factors are for 32 channels: its latent format's reshape turns 128 channels at 8×8 into 32 at 16×16."""
    model = tiny(name)
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    with previews_shown() as shown:
        out = train(pack, model, basis, name, steps=2, preview_every=1, preview_steps=2)
    side = 16 if name == "flux2" else 8
    *each, last = shown
    assert each == [(1, "JPEG", (side, side)), (2, "JPEG", (side, side))]
    assert last == (2, "JPEG", (2 * side + 4, side))  # then the whole strip
    strip = out[3]
    assert tuple(strip.shape) == (1, side, 2 * side + 4, 3) and float(strip.std()) > 0
