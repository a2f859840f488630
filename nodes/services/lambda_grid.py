"""The λ Grid's work: every (λc, λs) cell sampled as KSampler samples it, decoded and labelled.

ComfyUI's core nodes cannot draw labels on images, so the grid samples every
cell itself, with the same seed and settings, and writes the λ values in the
margins: rows are λc (content), columns λs (style). The rows can sweep λ over
steps (schedules, sampled through the same weight hooks as the λ over Steps
node) or a content or style block profile instead, at one λc.
"""

from __future__ import annotations

import inspect

import comfy.hooks
import comfy.model_management
import comfy.sample
import comfy.utils
import latent_preview
import torch

from ...qr_core import detect_architecture
from ...qr_core.merging.blocks import parse_block_profile, scaled_by_blocks
from ...qr_core.merging.lambda_schedule import resolve_schedule
from .model_weights import core_model, model_shapes
from .patches import merge_onto
from .schedule_hooks import scheduled_hooks

MAX_CELLS = 64
# cfg 0 means "the model's own": the cfg ComfyUI's example workflows sample each family with (and so do the
# pack's workflows). FLUX and FLUX.2 are guidance-distilled: cfg 1, their guidance set by FluxGuidance.
AUTO_CFG = {"flux": 1.0, "flux2": 1.0, "sd3": 4.0, "qwen_image": 2.5}
FALLBACK_CFG = 7.0  # SD1.5 and SDXL, and every model not in AUTO_CFG: set cfg yourself as its workflows do
AUTO_CFG_HELP = ("0 (the default): the model's own, " + ", ".join(
    f"{name} {AUTO_CFG[arch]:g}" for arch, name in (("flux", "FLUX"), ("flux2", "FLUX.2"), ("sd3", "SD3.5"),
                                                     ("qwen_image", "Qwen-Image")))
    + f", {FALLBACK_CFG:g} for SD1.5, SDXL and any other model (set it as that model's workflows do).")


def grid_cfg(model, cfg: float) -> float:
    """The cfg the grid samples with: `cfg` itself, or for 0 the model's own (AUTO_CFG)."""
    if cfg > 0:
        return cfg
    return AUTO_CFG.get(detect_architecture(model_shapes(model), core_model(model)), FALLBACK_CFG)


def cfg_caption(requested: float, used: float) -> str:
    """The grid's corner line for its cfg, so a grid sampled at cfg 0 says which cfg that was."""
    return f"cfg {used:g}" + (" (the model's own)" if requested <= 0 else "")


ROW_TITLES = {"lambda_content": "content", "schedule": "schedule", "content_block_profile": "content blocks",
              "style_block_profile": "style blocks"}


def sample_grid(model, content, style, positive, negative, latent_image: dict, vae, lambda_content_values: str,
                lambda_style_values: str, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                row_axis: str = "lambda_content", row_values: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(the labelled grid [1, H', W', 3], every cell row by row [cells, H, W, 3])."""
    labels, rows, cell = row_plans(row_axis, row_values, lambda_content_values, content, style)
    cols = parse_values(lambda_style_values, "lambda_style_values")
    if len(rows) * len(cols) > MAX_CELLS:
        raise ValueError(f"{len(rows)}×{len(cols)} cells: at most {MAX_CELLS}; use fewer rows or λ values.")
    used = grid_cfg(model, cfg)
    caption, cfg = cfg_caption(cfg, used), used
    latent, noise, noise_mask = ksampler_inputs(model, latent_image, seed)
    total = len(rows) * len(cols) * steps
    # core's step callback (its previews, its progress bar), moved along one bar over the whole grid
    show_step = latent_preview.prepare_callback(model, total)
    images = []
    for row in rows:
        for ls in cols:
            comfy.model_management.throw_exception_if_processing_interrupted()
            sampled, pos, neg = cell(model, row, ls, positive, negative)
            done = len(images) * steps
            samples = comfy.sample.sample(
                sampled, noise, steps, cfg, sampler_name, scheduler, pos, neg, latent, noise_mask=noise_mask,
                callback=lambda step, x0, x, _, done=done: show_step(done + step, x0, x, total),
                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
            decoded = vae.decode(samples)
            if decoded.ndim == 5:  # video VAEs: [B, T, H, W, C]
                decoded = decoded.reshape(-1, *decoded.shape[-3:])
            images.append(decoded[:1, ..., :3].float().cpu())
    batch = torch.cat(images)
    return label_grid(batch, labels, cols, ROW_TITLES[row_axis], caption), batch


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


def _text(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def label_grid(images: torch.Tensor, rows: list, cols: list[float], row_title: str = "content",
               caption: str = "") -> torch.Tensor:
    """images [rows·cols, H, W, 3] (row-major) → one IMAGE [1, H', W', 3] with labels in the margins.

    Rows are λc values, or the schedules / block profiles of another row axis (`row_title` names it);
    `caption` is one more line in the corner (the cfg)."""
    import numpy as np
    from PIL import Image, ImageDraw

    n, h, w, _ = images.shape
    size = max(12, min(h, w) // 12)
    font = _font(size)
    top, left = size * 2 + 8 + (size // 2 + 2 if caption else 0), size * 6
    canvas = Image.new("RGB", (left + w * len(cols), top + h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, len(cols))
        cell = (images[i].clamp(0, 1).cpu().float().numpy() * 255).round().astype(np.uint8)
        canvas.paste(Image.fromarray(cell), (left + c * w, top + r * h))
    corner = f"rows: {row_title}\ncols: style" + (f"\n{caption}" if caption else "")
    draw.text((4, 4), corner, fill="black", font=_font(max(10, size // 2)))
    for c, v in enumerate(cols):
        draw.text((left + c * w + w // 2, top // 2 + 2), f"style {v:g}", fill="black", font=font, anchor="mm")
    for r, v in enumerate(rows):
        draw.text((left // 2, top + r * h + h // 2), f"{row_title}\n{_text(v)}", fill="black", font=font,
                  anchor="mm", align="center")
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0).unsqueeze(0)


def ksampler_inputs(model, latent: dict, seed: int):
    """The latent, noise and noise mask of the first image KSampler samples from `latent` (core's common_ksampler).

    Made for the whole batch, then cut: a batch's first noise is not the noise of a one-image batch."""
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"], **downscale_ratios(latent))
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    mask = latent.get("noise_mask")
    return samples[:1], noise[:1], mask[:1] if mask is not None else None


def downscale_ratios(latent: dict) -> dict:
    """The latent's pixels-per-latent ratios, for a ComfyUI whose fix_empty_latent_channels takes them.

    An empty latent of another model family's ratio (Empty Latent Image: 8) is resized there to the
    model's (FLUX.2, Wan 2.2: 16); without them the grid would sample at twice KSampler's size."""
    takes = inspect.signature(comfy.sample.fix_empty_latent_channels).parameters
    return {k: latent.get(k) for k in ("downscale_ratio_spacial", "downscale_ratio_temporal") if k in takes}


def row_plans(row_axis: str, row_values: str, lambda_content_values: str, content, style):
    """Row labels, rows, and cell(model, row, λs, positive, negative) → (model, positive, negative) of one cell."""
    if row_axis == "lambda_content":
        def plain(model, lc, ls, positive, negative):
            return merge_onto(model, [content, style], [lc, ls]), positive, negative
        values = parse_values(lambda_content_values, "lambda_content_values")
        return values, values, plain
    lcs = parse_values(lambda_content_values, "lambda_content_values")
    if len(lcs) != 1:
        raise ValueError(f"the rows sweep {row_axis}, so lambda_content_values is the one λc of every row, "
                         f"not {len(lcs)} values.")
    lc = lcs[0]
    texts = [t.strip() for t in (row_values or "").split("|") if t.strip()]
    if not texts:
        raise ValueError(f"row_axis {row_axis}: give the rows in row_values, separated by '|'.")
    if row_axis == "schedule":
        # a row with numbers is a custom list of points; a word is a preset (an unknown one lists the presets)
        plans = [resolve_schedule("custom", t) if any(c.isdigit() for c in t) else resolve_schedule(t) for t in texts]

        def scheduled(model, plan, ls, positive, negative):
            hooks = scheduled_hooks(model, [content, style], [lc, ls], plan)
            return (model, comfy.hooks.set_hooks_for_conditioning(positive, hooks),
                    comfy.hooks.set_hooks_for_conditioning(negative, hooks))
        return texts, plans, scheduled
    which = "content" if row_axis == "content_block_profile" else "style"
    delta = content if which == "content" else style
    profiles = [scaled_by_blocks(delta, parse_block_profile(t, delta.arch)) for t in texts]

    def blocks(model, scaled, ls, positive, negative):
        pair = [scaled, style] if which == "content" else [content, scaled]
        return merge_onto(model, pair, [lc, ls]), positive, negative
    return texts, profiles, blocks
