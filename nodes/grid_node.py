"""QR-LoRA λ Grid: one labelled image grid over λc × λs (paper Fig. 7/17).

ComfyUI's core nodes cannot draw labels on images, so this node samples every
(λc, λs) cell itself, with the same seed and settings, and writes the λ values
in the margins: rows are λc (content), columns λs (style).
"""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io, ui

from .services.patches import merge_onto
from .options import check_options
from .sockets import CATEGORY, QRDeltaType

MAX_CELLS = 64


def parse_values(text: str, what: str) -> list[float]:
    """'0.5, 0.75, 1.0' → [0.5, 0.75, 1.0]; also 'start:stop:step' (stop included)."""
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(round((stop - start) / step)) + 1
            values = [round(start + i * step, 6) for i in range(max(n, 0))]
        else:
            values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}: write numbers separated by commas ('0.5, 0.75, 1.0') or start:stop:step "
                         f"('0.5:1.0:0.1'), not {text!r}.") from None
    if not values:
        raise ValueError(f"{what}: no λ value given.")
    return values


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def label_grid(images: torch.Tensor, rows: list[float], cols: list[float]) -> torch.Tensor:
    """images [rows·cols, H, W, 3] (row-major) → one IMAGE [1, H', W', 3] with λ labels in the margins."""
    import numpy as np
    from PIL import Image, ImageDraw

    n, h, w, _ = images.shape
    size = max(12, min(h, w) // 12)
    font = _font(size)
    top, left = size * 2 + 8, size * 6
    canvas = Image.new("RGB", (left + w * len(cols), top + h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, len(cols))
        cell = (images[i].clamp(0, 1).cpu().float().numpy() * 255).round().astype(np.uint8)
        canvas.paste(Image.fromarray(cell), (left + c * w, top + r * h))
    draw.text((4, 4), "rows: content\ncols: style", fill="black", font=_font(max(10, size // 2)))
    for c, v in enumerate(cols):
        draw.text((left + c * w + w // 2, top // 2 + 2), f"style {v:g}", fill="black", font=font, anchor="mm")
    for r, v in enumerate(rows):
        draw.text((left // 2, top + r * h + h // 2), f"content\n{v:g}", fill="black", font=font, anchor="mm",
                  align="center")
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0).unsqueeze(0)


class QRLambdaGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRALambdaGrid",
            display_name="QR-LoRA λ Grid",
            category=CATEGORY,
            description="Samples the same prompt and seed for every (λc, λs) pair and returns one labelled grid: "
                        "rows λc (content), columns λs (style), as in the paper's Fig. 7.",
            inputs=[
                io.Model.Input("model", tooltip="The base model the ΔR were trained on."),
                QRDeltaType.Input("content", tooltip="The content ΔR."),
                QRDeltaType.Input("style", tooltip="The style ΔR."),
                io.Conditioning.Input("positive", tooltip="The prompt, e.g. 'a <c> dog in <s> style'."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (ignored by FLUX at cfg 1)."),
                io.Latent.Input("latent_image", tooltip="One empty latent: the size of every cell."),
                io.Vae.Input("vae", tooltip="Decodes each cell."),
                io.String.Input("lambda_content_values", default="0.5, 0.75, 1.0",
                                tooltip="λc of the rows: numbers separated by commas, or start:stop:step."),
                io.String.Input("lambda_style_values", default="0.5, 0.75, 1.0",
                                tooltip="λs of the columns: numbers separated by commas, or start:stop:step."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="One seed for every cell, so only λ changes across the grid."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps per cell."),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance (FLUX: 1.0 with a FluxGuidance node)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="The sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="The noise schedule."),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="The labelled grid (one image)."),
                io.Image.Output(display_name="images", tooltip="Every cell, row by row (a batch)."),
            ],
        )

    @classmethod
    def execute(cls, model, content, style, positive, negative, latent_image, vae, lambda_content_values,
                lambda_style_values, seed, steps, cfg, sampler_name, scheduler) -> io.NodeOutput:
        check_options(cls, {"sampler_name": sampler_name, "scheduler": scheduler})
        rows = parse_values(lambda_content_values, "lambda_content_values")
        cols = parse_values(lambda_style_values, "lambda_style_values")
        if len(rows) * len(cols) > MAX_CELLS:
            raise ValueError(f"{len(rows)}×{len(cols)} cells: at most {MAX_CELLS}; use fewer λ values.")
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"][:1])
        noise = comfy.sample.prepare_noise(latent, seed)
        bar = comfy.utils.ProgressBar(len(rows) * len(cols) * steps)
        images = []
        for lc in rows:
            for ls in cols:
                comfy.model_management.throw_exception_if_processing_interrupted()
                patched = merge_onto(model, [content, style], [lc, ls])
                done = len(images) * steps
                samples = comfy.sample.sample(
                    patched, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent, seed=seed,
                    callback=lambda step, x0, x, total, done=done: bar.update_absolute(done + step + 1),
                    disable_pbar=True)
                decoded = vae.decode(samples)
                if decoded.ndim == 5:  # video VAEs: [B, T, H, W, C]
                    decoded = decoded.reshape(-1, *decoded.shape[-3:])
                images.append(decoded[:1, ..., :3].float().cpu())
        batch = torch.cat(images)
        grid = label_grid(batch, rows, cols)
        return io.NodeOutput(grid, batch, ui=ui.PreviewImage(grid, cls=cls))
