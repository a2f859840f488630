"""What the ComfyUI benchmarks share: the runtime with the pack loaded, and models built from ComfyUI's classes.

Imported by bench/train_step.py and bench/merge_reapply.py (run as scripts,
so this folder is on sys.path).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]

# Model configs for ComfyUI's classes. "small" and "tiny": CPU-sized members
# of the real architectures; "full": the released models' shapes.
CONFIGS = {
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


def machine_name(device: str) -> str:
    if device == "cuda":
        import torch

        return "cuda-" + torch.cuda.get_device_name().lower().replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"


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


def build(arch: str, size: str, device, dtype=None):
    """A ModelPatcher around a random-weight model of `arch` at `size` (matrices std 1/√fan_in).

    dtype: storage dtype (default fp32 on the CPU, bf16 on CUDA); compute
    runs in fp32 on the CPU, as ComfyUI does there.
    """
    import torch
    import comfy.model_patcher
    import comfy.supported_models

    cls = {"sd3": comfy.supported_models.SD3, "sdxl": comfy.supported_models.SDXL,
           "flux": comfy.supported_models.Flux}[arch]
    config = cls(dict(CONFIGS[arch][size]))
    if arch == "sdxl":  # the class's unet_extra_config would override the head layout
        config.unet_config.update(num_head_channels=64, num_heads=-1)
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    compute = torch.float32 if device.type == "cpu" and dtype != torch.float32 else None
    config.set_inference_dtype(dtype, compute)
    g = torch.Generator().manual_seed(0)
    model = config.get_model({}, device=device)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim >= 2:
                p.copy_((torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5).to(device, p.dtype))
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))
