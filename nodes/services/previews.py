"""Train ΔR's previews as the user sees them: on the node while it trains, and as one IMAGE strip afterwards.

On the node they go through the progress bar as KSampler's do, decoded by
ComfyUI's latent previewer (its --preview-method: TAESD or latent-to-RGB
factors; latent-to-RGB when previews are off there, so Train ΔR always shows
something), or fully by a connected VAE.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import latent_preview

GAP = 4  # pixels between the previews of a strip
EMPTY = (64, 64)  # the IMAGE output of a run without previews: one black square


def latent_to_rgb(fmt):
    """The latent-to-RGB previewer that core's get_previewer builds when its preview method is off, or None.

    Built as get_previewer builds it; the factors' reshape (FLUX.2: 128 channels → 32 at twice the size)
    is passed only where the format has one: ComfyUI 0.3.x has neither it nor the previewer's argument."""
    if fmt.latent_rgb_factors is None:
        return None
    reshape = getattr(fmt, "latent_rgb_factors_reshape", None)
    extra = () if reshape is None else (reshape,)
    return latent_preview.Latent2RGBPreviewer(fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias, *extra)


class PreviewStrip:
    """Decodes each preview, shows it on the node and keeps it for the strip."""

    def __init__(self, model, vae=None):
        self.model, self.vae = model, vae
        self.device = model.load_device
        fmt = model.model.latent_format
        self.previewer = latent_preview.get_previewer(self.device, fmt) or latent_to_rgb(fmt)
        self.images: list[torch.Tensor] = []  # [H, W, 3] in 0…1, one per preview
        self.seconds = 0.0  # decoding and showing

    def add(self, latent: torch.Tensor) -> tuple:
        """Decode a sampled latent (the model's space); returns the progress bar's preview ("JPEG", image, size)."""
        t0 = time.perf_counter()
        with torch.no_grad():
            if self.vae is not None:
                image = self.vae.decode(self.model.model.process_latent_out(latent.to(self.device)))
                image = image.reshape(-1, *image.shape[-3:])[0, ..., :3].float().cpu().clamp(0, 1)
                from PIL import Image
                shown = ("JPEG", Image.fromarray((image.numpy() * 255).round().astype(np.uint8)),
                         latent_preview.MAX_PREVIEW_RESOLUTION)
            elif self.previewer is not None:
                shown = self.previewer.decode_latent_to_preview_image("JPEG", latent)
                image = torch.from_numpy(np.asarray(shown[1].convert("RGB"), dtype=np.float32) / 255.0)
            else:  # a latent format without RGB factors: its first channels as grey
                grey = latent[0, 0].float().cpu()
                grey = (grey - grey.min()) / (grey.max() - grey.min()).clamp_min(1e-6)
                image = grey[..., None].expand(*grey.shape, 3).contiguous()
                from PIL import Image
                shown = ("JPEG", Image.fromarray((image.numpy() * 255).round().astype(np.uint8)),
                         latent_preview.MAX_PREVIEW_RESOLUTION)
        self.images.append(image)
        self.seconds += time.perf_counter() - t0
        return shown

    def strip_preview(self) -> tuple:
        """The strip as the progress bar's preview: after the run the node shows all previews, not the last."""
        from PIL import Image
        pixels = (self.strip()[0].numpy() * 255).round().astype(np.uint8)
        return "JPEG", Image.fromarray(pixels), latent_preview.MAX_PREVIEW_RESOLUTION

    def strip(self) -> torch.Tensor:
        """The previews side by side, oldest first, as a ComfyUI IMAGE [1, H, W, 3]."""
        if not self.images:
            return torch.zeros(1, *EMPTY, 3)
        height = max(i.shape[0] for i in self.images)
        parts = []
        for i, image in enumerate(self.images):
            if i:
                parts.append(torch.ones(height, GAP, 3))
            pad = height - image.shape[0]
            parts.append(torch.nn.functional.pad(image, (0, 0, 0, 0, 0, pad)) if pad else image)
        return torch.cat(parts, 1)[None]
