"""Random-weight models built from ComfyUI's own classes, and the runtime with the pack loaded.

Used by the ComfyUI benchmarks beside it (bench/train_step.py,
bench/merge_reapply.py), by tests/comfyui (comfy_env; tests/pytest.ini puts
this folder on the tests' path) and by the live tests' node pack (which runs
inside ComfyUI's server process and loads it by path).
Sizes: "tiny" (the tests': seconds on a CPU, every target kind of the real
architecture), "small" (CPU benchmarks), "full" (the released models' shapes).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]

_TINY_UNET = dict(use_linear_in_transformer=True, use_temporal_attention=False, use_temporal_resblock=False,
                  in_channels=4, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
                  transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, num_head_channels=-1,
                  use_spatial_transformer=True, image_size=32, legacy=False, context_dim=32, model_channels=32,
                  num_heads=2)

CONFIGS = {
    "sd15": {
        "tiny": dict(_TINY_UNET, adm_in_channels=None),
    },
    "sd3": {
        "small": dict(in_channels=16, out_channels=16, depth=8, patch_size=2, pos_embed_max_size=64,
                      adm_in_channels=256, num_patches=4096, pos_embed_scaling_factor=None, qk_norm=None,
                      x_block_self_attn_layers=[], context_embedder_config={
                          "target": "torch.nn.Linear", "params": {"in_features": 256, "out_features": 512}}),
        "tiny": dict(in_channels=16, out_channels=16, depth=2, patch_size=2, pos_embed_max_size=32,
                     adm_in_channels=32, num_patches=1024, pos_embed_scaling_factor=None, qk_norm=None,
                     x_block_self_attn_layers=[], context_embedder_config={
                         "target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 128}}),
    },
    "sdxl": {
        "tiny": dict(_TINY_UNET, adm_in_channels=2816 - 1280 + 32, num_classes="sequential"),
        "small": dict(use_linear_in_transformer=True, use_temporal_attention=False, use_temporal_resblock=False,
                      in_channels=4, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2],
                      transformer_depth=[1, 2], transformer_depth_output=[1, 1, 2, 2], transformer_depth_middle=2,
                      num_head_channels=64, num_heads=-1, use_spatial_transformer=True, image_size=32, legacy=False,
                      context_dim=256, model_channels=128, adm_in_channels=256 + 1536, num_classes="sequential"),
        "full": dict(model_channels=320, use_linear_in_transformer=True, transformer_depth=[0, 0, 2, 2, 10, 10],
                     context_dim=2048, adm_in_channels=2816, use_temporal_attention=False, in_channels=4,
                     out_channels=4, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                     transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10,
                     num_classes="sequential", use_spatial_transformer=True, image_size=32, legacy=False,
                     num_head_channels=64, num_heads=-1, use_temporal_resblock=False),
    },
    "flux": {
        "small": dict(image_model="flux", guidance_embed=True, in_channels=16, out_channels=16, vec_in_dim=256,
                      context_in_dim=256, hidden_size=512, mlp_ratio=4.0, num_heads=8, depth=2,
                      depth_single_blocks=4, axes_dim=[16, 24, 24], theta=10000, patch_size=2, qkv_bias=True),
        "tiny": dict(image_model="flux", guidance_embed=True, in_channels=16, out_channels=16, vec_in_dim=32,
                     context_in_dim=32, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1,
                     axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True),
        "full": dict(image_model="flux", guidance_embed=True, in_channels=16, out_channels=16, vec_in_dim=768,
                     context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
                     depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True),
    },
}
CLASSES = {"sd15": "SD15", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}  # in comfy.supported_models

# The 2025 models, tiny: every target kind of the released layout (dual- and single-stream blocks, refiners,
# experts), widths of 64 and 1–2 blocks. A name here is a model; its pack architecture is NEWER_ARCH's.
# Fields ComfyUI's detection fixes at the released model's values (heads, RoPE axes, text widths) come
# from the sketch; the sizes detection reads are then confirmed from the built layout.
NEWER_CONFIGS = {
    "flux2": dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=32,
                  hidden_size=64, mlp_ratio=3.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 8, 8, 8],
                  theta=2000, patch_size=1, qkv_bias=False, guidance_embed=True, txt_ids_dims=[3],
                  global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                  ref_index_scale=10.0),
    "chroma": dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=32, hidden_size=64,
                   mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12], theta=10000,
                   patch_size=2, qkv_bias=True, in_dim=64, out_dim=64, hidden_dim=64, n_layers=1),
    "qwen_image": dict(image_model="qwen_image", in_channels=64, out_channels=16, num_layers=2, attention_head_dim=32,
                       num_attention_heads=2, joint_attention_dim=32, axes_dims_rope=(8, 12, 12)),
    # Z-Image's modulation reads a 256-wide time embedding that ComfyUI narrows to the width below 256.
    "zimage": dict(image_model="lumina2", patch_size=2, in_channels=16, dim=256, cap_feat_dim=32, n_layers=1,
                   n_refiner_layers=1, qk_norm=True, n_heads=4, n_kv_heads=4, axes_dims=[16, 24, 24],
                   axes_lens=[64, 64, 64], rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, multiple_of=32,
                   z_image_modulation=True, time_scale=1000.0),
    "lumina2": dict(image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=32, n_layers=1,
                    n_refiner_layers=1, qk_norm=True, n_heads=2, n_kv_heads=1, axes_dims=[8, 12, 12],
                    axes_lens=[64, 64, 64], ffn_dim_multiplier=4.0, multiple_of=32),
    "hidream": dict(image_model="hidream", patch_size=2, in_channels=16, out_channels=None, num_layers=1,
                    num_single_layers=1, attention_head_dim=32, num_attention_heads=2, caption_channels=[32, 32],
                    text_emb_dim=32, num_routed_experts=2, num_activated_experts=1, axes_dims_rope=(16, 8, 8),
                    max_resolution=(16, 16), llama_layers=[0, 1]),
    "wan21": dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=64, ffn_dim=128,
                  freq_dim=256, text_dim=32, out_dim=16, num_heads=2, num_layers=1, window_size=(-1, -1),
                  qk_norm=True, cross_attn_norm=True, eps=1e-6),
    "wan22": dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=48, dim=64, ffn_dim=128,
                  freq_dim=256, text_dim=32, out_dim=48, num_heads=2, num_layers=1, window_size=(-1, -1),
                  qk_norm=True, cross_attn_norm=True, eps=1e-6),
    # ComfyUI 0.33's. LongCat-Image and Mage-Flow are told from FLUX and Qwen-Image by their text width
    # (3584, 2560) and Mage-Flow also by its 128 output channels, so those stay at the released values.
    "longcat": dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=3584,
                    hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12],
                    theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False, txt_ids_dims=[1, 2]),
    "ovis": dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=32,
                 hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12],
                 theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False, yak_mlp=True, txt_norm=True,
                 txt_ids_dims=[1, 2]),
    "mage_flow": dict(image_model="mage_flow", in_channels=128, out_channels=128, num_layers=2, attention_head_dim=32,
                      num_attention_heads=2, joint_attention_dim=2560, axes_dims_rope=(8, 12, 12)),
    "ernie": dict(image_model="ernie", hidden_size=64, num_attention_heads=2, num_layers=2, ffn_hidden_size=128,
                  in_channels=128, out_channels=128, patch_size=1, text_in_dim=32, rope_axes_dim=(8, 12, 12)),
    # Krea 2's detection fixes the head size at 128: one head of 128. Its text arrives as the text
    # encoder's layers side by side: 2 layers of 16 = the tests' 32-wide conditioning.
    "krea2": dict(image_model="krea2", features=128, heads=1, kvheads=1, layers=2, patch=2, channels=16,
                  txtlayers=2, txtdim=16, txtheads=1, txtkvheads=1, multiplier=2),
    # Anima's text adapter has fixed sizes (1024 wide): the tiny model's 2 blocks are the small part.
    "anima": dict(image_model="anima", max_img_h=240, max_img_w=240, max_frames=128, in_channels=16, out_channels=16,
                  patch_spatial=2, patch_temporal=1, model_channels=64, num_blocks=2, num_heads=2, mlp_ratio=2.0,
                  crossattn_emb_channels=32, pos_emb_cls="rope3d", pos_emb_learnable=True, use_adaln_lora=True,
                  adaln_lora_dim=16),
    # LTX-2 (ComfyUI's LTXAV): video width 64 (2 heads of 32), audio width 32; detection reads the block
    # count and the cross-attention's shape only, the rest is the sketch's. Its text connectors: 1 block.
    "ltx2": dict(image_model="ltxav", in_channels=128, audio_in_channels=128, cross_attention_dim=64,
                 audio_cross_attention_dim=32, attention_head_dim=32, audio_attention_head_dim=16,
                 num_attention_heads=2, audio_num_attention_heads=2, caption_channels=32, num_layers=2,
                 connector_attention_head_dim=16, connector_num_attention_heads=2, connector_num_layers=1),
    # Lens has no table in the pack (its keys include Qwen-Image's txt_norm): the tests check it is refused.
    "lens": dict(image_model="lens", in_channels=128, out_channels=32, num_layers=1, num_attention_heads=1,
                 enc_hidden_dim=32, multi_layer_encoder_feature=False, selected_layer_index=(0,)),
}
NEWER_ARCH = {"flux2": "flux2", "chroma": "chroma", "qwen_image": "qwen_image", "zimage": "lumina2",
              "lumina2": "lumina2", "hidream": "hidream", "wan21": "wan", "wan22": "wan", "longcat": "longcat",
              "ovis": "ovis", "mage_flow": "mage_flow", "ernie": "ernie", "krea2": "krea2", "anima": "anima", "ltx2": "ltx2",
              "lens": None}
# Ovis-Image has no config class of its own: ComfyUI loads it as FLUX (schnell: no guidance input).
NEWER_CLASSES = {"flux2": "Flux2", "chroma": "Chroma", "qwen_image": "QwenImage", "zimage": "ZImage",
                 "lumina2": "Lumina2", "hidream": "HiDream", "wan21": "WAN21_T2V", "wan22": "WAN22_T2V",
                 "longcat": "LongCatImage", "ovis": "FluxSchnell", "mage_flow": "MageFlow", "ernie": "ErnieImage",
                 "krea2": "Krea2", "anima": "Anima", "ltx2": "LTXAV", "lens": "Lens"}
# Models built from a shared config class that only a later ComfyUI's FLUX can build: the FluxParams field.
NEEDS_FLUX_PARAM = {"ovis": "yak_mlp"}
for _name, _sketch in NEWER_CONFIGS.items():
    CONFIGS[_name] = {"tiny": _sketch}
CLASSES.update(NEWER_CLASSES)


def missing_class(name: str) -> str | None:
    """Why this ComfyUI cannot build the model `name` (its class is newer), or None when it can."""
    import comfy.supported_models

    cls = CLASSES[name]
    if not hasattr(comfy.supported_models, cls):
        return f"this ComfyUI has no {cls} in comfy.supported_models (added in a later version than it)"
    if name in NEEDS_FLUX_PARAM:
        import dataclasses

        import comfy.ldm.flux.model

        if NEEDS_FLUX_PARAM[name] not in {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}:
            return f"this ComfyUI's FLUX has no {NEEDS_FLUX_PARAM[name]} (added in a later version than it)"
    return None
# Applied after the class's unet_extra_config, which would otherwise win: SDXL fixes 64 channels
# per head, which would leave the 32-channel tiny UNet with none.
HEAD_OVERRIDES = {("sdxl", "tiny"): {"num_head_channels": 16, "num_heads": -1}}


def comfy_setup(device: str, model_folders: dict[str, Path] | None = None):
    """ComfyUI's runtime with the pack loaded by its own loader; returns the pack's module.

    `model_folders` redirects model folders (name → directory) so that a
    benchmark never writes into the user's ComfyUI models.
    """
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    sys.path.insert(0, str(Path(comfy_path).resolve()))
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    import folder_paths
    import nodes

    for name, folder in (model_folders or {}).items():
        folder.mkdir(parents=True, exist_ok=True)
        folder_paths.folder_names_and_paths[name] = ([str(folder)], {".safetensors"})
    asyncio.run(nodes.load_custom_node(str(PACK_DIR)))
    return sys.modules[str(PACK_DIR).replace(".", "_x_")]


def pack_module(pack, dotted: str):
    return sys.modules[f"{pack.__name__}.{dotted}"]


def _meta_layout(unet_config: dict, model_class, overrides: dict) -> dict:
    """The state dict (meta tensors: shapes, no memory) of the diffusion model `unet_config` describes."""
    import torch

    config = model_class(dict(unet_config))
    config.unet_config.update(overrides)
    with torch.device("meta"):
        model = config.get_model({}, device=torch.device("meta"))
    return model.diffusion_model.state_dict()


def _flux_seed_layout(sketch: dict) -> dict:
    """The FLUX keys ComfyUI's detection reads: enough for it to give every field its FluxParams needs,
    which the sketch alone may lack (ComfyUI 0.8 added the required `txt_ids_dims`)."""
    import torch

    h, d = sketch["hidden_size"], sketch["hidden_size"] // sketch["num_heads"]
    layout = {"img_in.weight": (h, sketch["in_channels"] * sketch["patch_size"] ** 2),
              "txt_in.weight": (h, sketch["context_in_dim"])}
    if sketch.get("vec_in_dim"):
        layout["vector_in.in_layer.weight"] = (h, sketch["vec_in_dim"])
    if sketch.get("image_model") == "chroma":  # its modulation network, which detection looks for
        layout["distilled_guidance_layer.norms.0.scale"] = (sketch["hidden_dim"],)
    if sketch.get("image_model") == "flux2":
        layout["double_stream_modulation_img.lin.weight"] = (6 * h, h)
    if sketch.get("yak_mlp"):  # Ovis-Image: gated MLPs and a norm on the text input
        layout["double_blocks.0.img_mlp.gate_proj.weight"] = (int(h * sketch["mlp_ratio"]), h)
        layout["txt_norm.weight"] = (sketch["context_in_dim"],)
    if sketch.get("guidance_embed"):
        layout["guidance_in.in_layer.weight"] = (h, 256)
    for i in range(sketch["depth"]):
        layout[f"double_blocks.{i}.img_attn.norm.key_norm.scale"] = (d,)
    for i in range(sketch["depth_single_blocks"]):
        layout[f"single_blocks.{i}.norm.key_norm.scale"] = (d,)
    return {k: torch.empty(shape, device="meta") for k, shape in layout.items()}


def detected_unet_config(arch: str, sketch: dict, overrides: dict | None = None) -> dict:
    """The model config as ComfyUI's own detection reads it from the model's state-dict layout.

    A checkpoint loads this way (state dict → comfy.model_detection →
    config), so fields that a ComfyUI version adds or requires are filled by
    that version, not by this file. What no shape shows (FLUX's head count,
    RoPE axes, MLP ratio: detection fixes them at FLUX.1's) comes from the
    sketch, and so do sizes, which the layout's shapes then confirm.
    """
    import comfy.model_detection
    import comfy.supported_models

    model_class = getattr(comfy.supported_models, CLASSES[arch])
    overrides = overrides or {}
    # FLUX's class cannot be built from the sketch alone where ComfyUI requires more fields: a seed
    # layout of the keys its detection reads gives them; then detection reads the whole layout.
    flux_like = arch in ("flux", "flux2", "chroma", "longcat", "ovis")
    seed = _flux_seed_layout(sketch) if flux_like else _meta_layout(sketch, model_class, overrides)
    seeded = {**comfy.model_detection.detect_unet_config(seed, ""), **sketch}
    layout = _meta_layout(seeded, model_class, overrides)
    return {**comfy.model_detection.detect_unet_config(layout, ""), **sketch}


def model_config(arch: str, size: str = "tiny", dtype=None, compute_dtype=None, **changes):
    """ComfyUI's model config for `arch` at `size`; `changes` edit the UNet/DiT config (e.g. hidden_size)."""
    import comfy.supported_models
    import torch

    overrides = HEAD_OVERRIDES.get((arch, size), {})
    unet_config = detected_unet_config(arch, dict(CONFIGS[arch][size], **changes), overrides)
    config = getattr(comfy.supported_models, CLASSES[arch])(unet_config)
    config.unet_config.update(overrides)
    config.set_inference_dtype(dtype or torch.float32, compute_dtype)  # compute_dtype: ComfyUI's manual cast
    return config


def random_model(config, device, seed: int = 0, inference_mode: bool = True):
    """A ModelPatcher around the config's model with random weights.

    Matrices get std 1/√fan_in, norm scales 1 and biases 0, so signals keep
    their size through the network and an update anywhere can move the
    output; float buffers (SD3's pos_embed, which ComfyUI leaves
    uninitialised) get N(0, 0.02²). Built in inference mode by default, as
    ComfyUI's loaders build models.
    """
    import torch
    import comfy.model_patcher

    device = torch.device(device)
    # Drawn on the model's device: full-size FLUX (12 B weights) takes minutes to draw on a CPU.
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.inference_mode(inference_mode), torch.no_grad():
        model = config.get_model({}, device=device)
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim >= 2:
                value = torch.randn(p.shape, generator=g, device=device) / p[0].numel() ** 0.5
            elif name.endswith(("weight", "scale")) or p.ndim == 0:  # RMSNorm gains (FLUX: .scale) too
                value = torch.ones(p.shape, device=device)
            else:
                value = torch.zeros(p.shape, device=device)
            p.copy_(value.to(p.dtype))
        for b in model.diffusion_model.buffers():
            if b.is_floating_point():
                b.copy_((torch.randn(b.shape, generator=g, device=device) * 0.02).to(b.dtype))
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def build(arch: str, size: str, device, dtype=None):
    """A benchmark model: random weights, autograd-ready (not inference tensors).

    dtype: storage dtype (default fp32 on the CPU, bf16 on CUDA); compute
    runs in fp32 on the CPU, as ComfyUI does there.
    """
    import torch

    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    compute = torch.float32 if device.type == "cpu" and dtype != torch.float32 else None
    return random_model(model_config(arch, size, dtype, compute), device, inference_mode=False)
