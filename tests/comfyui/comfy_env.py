"""Tiny random-weight models of real ComfyUI architectures, built from ComfyUI's own classes."""

from __future__ import annotations

import pytest

from qr_comfyui_runtime import AVAILABLE

if not AVAILABLE:
    pytest.skip("ComfyUI runtime not found: set COMFYUI_PATH to a ComfyUI checkout to run these tests.",
                allow_module_level=True)

import importlib.util  # noqa: E402

import torch  # noqa: E402

from qr_comfyui_runtime import PACK_DIR  # noqa: E402

CPU = torch.device("cpu")


def _load_models_module():
    """bench/comfy_bench.py, the one builder of random-weight ComfyUI models (benchmarks and tests)."""
    spec = importlib.util.spec_from_file_location("qr_lora_comfy_models", PACK_DIR / "bench" / "comfy_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


comfy_models = _load_models_module()


def tiny_model(arch: str, seed: int = 0, dtype=torch.float32, compute_dtype=None, scaled_fp8=None, **changes):
    """A ModelPatcher around a tiny random-weight model of `arch`, built (like ComfyUI's loaders) in inference mode.

    `changes` edit the architecture's config (e.g. hidden_size for a model of another size).
    """
    config = comfy_models.model_config(arch, "tiny", dtype, compute_dtype, scaled_fp8, **changes)
    return comfy_models.random_model(config, CPU, seed)


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
