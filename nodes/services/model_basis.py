"""The QR basis of a ComfyUI model's base weights: what Decompose and the headless trainer share."""

from __future__ import annotations

import comfy.model_management
import comfy.utils

from ...qr_core import BasisCache, DecomposeSettings, get_basis, select_targets
from . import folders, model_weights


def decompose_model(model, rank: int, preset: str, regex: str, method: str, use_cache: bool):
    """The basis of a ComfyUI model's base weights: from the cache when it holds a valid one."""
    shapes = model_weights.model_shapes(model)
    targets = select_targets(shapes, preset, regex.strip() or None, core=model_weights.core_model(model))
    get_weight = model_weights.base_weight_getter(model)
    bar = comfy.utils.ProgressBar(len(targets))

    def progress(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, total)

    cache = BasisCache(folders.basis_cache_dir()) if use_cache else None
    device = comfy.model_management.get_torch_device()
    return get_basis(get_weight, targets, DecomposeSettings(rank=rank, method=method), cache, device, progress)
