"""Files for `qr-lora train` on a CPU: a tiny SD3 diffusion model, a text encoder and a VAE ComfyUI's loaders read,
and a dataset folder of images with captions. Used by tests/comfyui/test_comfyui_train_cli.py and
bench/train_distributed.py.

ComfyUI's loaders pick a model class from the file's layout, so each file has a real layout: SD3's MMDiT (its
detection reads every size from the file, so a tiny one loads as SD3), CLIP-L at its released size (the smallest
text encoder SD3 takes; ComfyUI fixes its layer count and width), and TAESD for SD3 (16 latent channels), a
released small VAE. Weights are random: the files test the machinery, not pictures.
"""

from __future__ import annotations

from pathlib import Path

import comfy_models

CAPTIONS = ("a photo of <c> dog on grass", "a photo of <c> dog on a sofa", "a photo of <c> dog in snow",
            "a photo of <c> dog, portrait")
# Three images of one size, one of another: the node's size buckets, and (batch 2 on two processes) a step
# whose bucket has fewer images than the global batch.
SIZES = ((64, 64), (64, 64), (64, 64), (48, 64))  # (width, height)


def _fill(module, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                value = torch.randn(p.shape, generator=g) / max(p[0].numel(), 1) ** 0.5
            elif name.endswith("weight"):
                value = torch.ones(p.shape)
            else:
                value = torch.zeros(p.shape)
            p.copy_(value.to(p.dtype))


def write_diffusion_model(path: Path, seed: int = 0, size: str = "tiny") -> Path:
    """SD3 (MMDiT) whose text inputs fit a CLIP-L-only SD3 text encoder: 4096-wide context, 2048-wide pooled."""
    import safetensors.torch
    import torch

    config = comfy_models.model_config("sd3", size, torch.float32, adm_in_channels=2048, context_embedder_config={
        "target": "torch.nn.Linear", "params": {"in_features": 4096,
                                                "out_features": comfy_models.CONFIGS["sd3"][size]["context_embedder_config"]["params"]["out_features"]}})
    model = comfy_models.random_model(config, "cpu", seed, inference_mode=False)
    state = {k: v.contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    safetensors.torch.save_file(state, str(path))
    return path


def write_text_encoder(path: Path, seed: int = 1) -> Path:
    """CLIP-L (ComfyUI's own CLIPTextModel at the released size), random, fp16."""
    import safetensors.torch
    import torch

    import comfy.sd1_clip

    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    transformer = clip.transformer
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")) or ".layer_norm" in name:
                p.copy_(torch.ones(p.shape) if name.endswith("weight") else torch.zeros(p.shape))
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    state = {k: v.to(torch.float16).contiguous() for k, v in transformer.state_dict().items() if v.is_floating_point()}
    safetensors.torch.save_file(state, str(path))
    return path


def write_vae(path: Path, seed: int = 2) -> Path:
    """TAESD with 16 latent channels (SD3's), as ComfyUI's VAE loader detects it."""
    import safetensors.torch
    import torch

    import comfy.taesd.taesd

    vae = comfy.taesd.taesd.TAESD(latent_channels=16)
    _fill(vae, seed)
    state = {k: v.contiguous() for k, v in vae.state_dict().items()}
    state["vae_scale"], state["vae_shift"] = torch.tensor(1.5305), torch.tensor(0.0609)
    safetensors.torch.save_file(state, str(path))
    return path


def write_dataset(folder: Path, seed: int = 3, count: int | None = None, sizes=SIZES) -> Path:
    """Images with a caption each, of `sizes` in turn; `count` repeats the pattern to that many images."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    count = count or len(sizes)
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        (folder / f"img{i:03d}.txt").write_text(CAPTIONS[i % len(CAPTIONS)] + (f" {i}" if i >= len(CAPTIONS) else ""))
    return folder


def write_all(folder: Path, images: int | None = None, size: str = "tiny", sizes=SIZES) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"diffusion_model": write_diffusion_model(folder / "sd3_tiny.safetensors", size=size),
            "text_encoder": write_text_encoder(folder / "clip_l_random.safetensors"),
            "vae": write_vae(folder / "taesd3_random.safetensors"),
            "dataset": write_dataset(folder / "dataset", count=images, sizes=sizes)}


def cli_args(files: dict[str, Path], models_dir: Path, cpu: bool = True) -> list[str]:
    """The model and dataset options of `qr-lora train` for these files."""
    return ["--cpu"] * cpu + ["--dataset", str(files["dataset"]), "--diffusion-model", str(files["diffusion_model"]),
            "--text-encoder", str(files["text_encoder"]), "--clip-type", "sd3", "--vae", str(files["vae"]),
            "--models-dir", str(models_dir)]
