"""Tiny random-weight models of real ComfyUI architectures, built from ComfyUI's own classes."""

from __future__ import annotations

import pytest

from qr_comfyui_runtime import AVAILABLE

if not AVAILABLE:
    pytest.skip("ComfyUI runtime not found: set COMFYUI_PATH to a ComfyUI checkout to run these tests.",
                allow_module_level=True)

import torch  # noqa: E402

import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.supported_models  # noqa: E402

CPU = torch.device("cpu")

_UNET_COMMON = dict(use_linear_in_transformer=True, use_temporal_attention=False, use_temporal_resblock=False,
                    in_channels=4, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2],
                    transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1,
                    num_head_channels=-1, use_spatial_transformer=True, image_size=32, legacy=False)

CONFIGS = {
    "sd15": (comfy.supported_models.SD15,
             dict(_UNET_COMMON, context_dim=32, model_channels=32, adm_in_channels=None, num_heads=2)),
    "sdxl": (comfy.supported_models.SDXL,
             dict(_UNET_COMMON, context_dim=32, model_channels=32, adm_in_channels=2816 - 1280 + 32, num_heads=2,
                  num_classes="sequential")),
    "sd3": (comfy.supported_models.SD3,
            dict(in_channels=16, pos_embed_scaling_factor=None, depth=2, patch_size=2, out_channels=16,
                 pos_embed_max_size=32, adm_in_channels=32, context_embedder_config={
                     "target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 128}},
                 num_patches=1024, qk_norm=None, x_block_self_attn_layers=[])),
    "flux": (comfy.supported_models.Flux,
             dict(image_model="flux", guidance_embed=True, in_channels=16, out_channels=16, vec_in_dim=32,
                  context_in_dim=32, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1,
                  axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True)),
}

# SDXL's class fixes 64 channels per head, which would leave a 32-channel tiny UNet with zero heads.
UNET_OVERRIDES = {"sdxl": {"num_head_channels": 16, "num_heads": -1}}


def tiny_model(arch: str, seed: int = 0, dtype=torch.float32, compute_dtype=None, scaled_fp8=None):
    """A ModelPatcher around a tiny random-weight model, built (like ComfyUI's loaders) in inference mode.

    Matrices get std 1/√fan_in, norm scales 1 and biases 0, so signals keep
    their size through the network and a ΔR anywhere can move the output.
    """
    cls, unet_config = CONFIGS[arch]
    config = cls(dict(unet_config))
    config.unet_config.update(UNET_OVERRIDES.get(arch, {}))  # wins over the class's unet_extra_config
    config.set_inference_dtype(dtype, compute_dtype)  # compute_dtype: ComfyUI's manual cast (fp8 storage)
    config.scaled_fp8 = scaled_fp8  # a "scaled fp8" checkpoint: fp8 weights times a per-layer scale_weight
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        model = config.get_model({}, device=CPU)
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim >= 2:
                value = torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5
            elif name.endswith("weight") or p.ndim == 0:
                value = torch.ones(p.shape)
            else:
                value = torch.zeros(p.shape)
            p.copy_(value.to(p.dtype))
        for b in model.diffusion_model.buffers():  # e.g. SD3's pos_embed: ComfyUI leaves it uninitialised
            if b.is_floating_point():
                b.copy_((torch.randn(b.shape, generator=g) * 0.02).to(b.dtype))
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def latent_and_cond(arch: str, batch: int = 1, size: int = 8, seed: int = 0):
    """A fixed latent and a conditioning in ComfyUI's format (list of [cross-attn, extras]).

    Made in inference mode, as VAE Encode and CLIP Text Encode make them.
    """
    g = torch.Generator().manual_seed(seed)
    channels = 4 if arch in ("sd15", "sdxl") else 16
    with torch.inference_mode():
        latent = torch.randn(batch, channels, size, size, generator=g)
        context = torch.randn(1, 6, 32, generator=g)
        extra = {}
        if arch in ("sdxl", "sd3", "flux"):
            extra["pooled_output"] = torch.randn(1, 32, generator=g)
    if arch == "flux":
        extra["guidance"] = 3.5
    return {"samples": latent}, [[context, extra]]


def diffusion_weights(model) -> dict[str, torch.Tensor]:
    """Copies of every diffusion-model weight as it currently is."""
    return {k: v.detach().clone() for k, v in model.model.diffusion_model.state_dict().items()}


def random_delta(pack, basis, seed: int, name: str, scale: float = 0.05):
    """A ΔR in `basis` with random entries (what training would produce, without the wait)."""
    qr_core = pack.module("qr_core")
    g = torch.Generator().manual_seed(seed)
    delta = {t.name: torch.randn(basis.rank, basis.targets.shapes[t.key][1], generator=g) * scale
             for t in basis.targets}
    return qr_core.QRDelta(basis.targets, basis.rank, dict(basis.q), delta, basis.fingerprint,
                           basis.weights_fingerprint, name=name)
