"""ΔR applied to a ComfyUI model as stock LoRA patches (what Merge, the λ Grid and Train's preview output do)."""

from __future__ import annotations

from typing import Iterable

import comfy.weight_adapter

from ...qr_core import PatchTerm, QRDelta, merge
from .model_weights import DIFFUSION_PREFIX, check_fits


def lora_patches(terms: Iterable[PatchTerm]) -> dict:
    """add_patches entries: one stock LoRA adapter per target, row slices as (key, (0, offset, size)).

    alpha = rank makes the scale 1, so the patch adds exactly up @ down.
    """
    patches = {}
    for t in terms:
        key = DIFFUSION_PREFIX + t.target.key
        if t.target.is_slice:
            key = (key, (0, t.target.offset, t.target.size))
        weights = (t.up.float(), t.down.float(), float(t.rank), None, None, None)
        patches[key] = comfy.weight_adapter.LoRAAdapter(set(), weights)
    return patches


def apply_terms(model, terms: list[PatchTerm]):
    """A clone of `model` with the terms added as patches (the original stays untouched)."""
    patched = model.clone()
    patches = lora_patches(terms)
    applied = patched.add_patches(patches, 1.0)
    if len(applied) != len(patches):
        missing = sorted({k if isinstance(k, str) else k[0] for k in patches} -
                         {k if isinstance(k, str) else k[0] for k in applied})
        raise ValueError(f"the model has no weight {missing[0]} (and {len(missing) - 1} more): "
                         "this ΔR belongs to another model.")
    return patched


def merge_onto(model, deltas: list[QRDelta], weights: list[float], allow_mixed_bases: bool = False):
    """A patched clone of `model` with W + Σ λᵢ Q ΔRᵢ on every target."""
    check_fits(deltas, model)
    return apply_terms(model, merge(deltas, weights, allow_mixed_bases))


def klora_merge_onto(model, deltas: list[QRDelta], weights: list[float], pattern: str, layers: str,
                     allow_mixed_bases: bool = False):
    """(a clone of `model` with K-LoRA between deltas[0], the content, and deltas[1], the style, its plan);
    further ΔR are added as Merge adds them. The plan scores Q·ΔR per target, computed once here."""
    from .klora_patches import klora_onto

    check_fits(deltas, model)
    content, style = (lora_patches(merge([d], [1.0])) for d in deltas[:2])
    patched, plan = klora_onto(model, content, style, weights[0], weights[1], pattern, layers)
    if len(deltas) > 2:
        patched.add_patches(lora_patches(merge(deltas[2:], weights[2:], allow_mixed_bases)), 1.0)
    return patched, plan
