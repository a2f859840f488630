"""QR-LoRA Decompose: the model's target weights → orthonormal bases Q (cached on disk)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..qr_core import PRESETS, BasisCache, DecomposeSettings, get_basis, select_targets
from ..qr_core.bases.decompose import METHODS
from .services import folders, model_weights
from .options import check_options
from .sockets import CATEGORY, QRBasis

BASIS_STATE = "qr_lora_basis"  # the ui key js/qr_lora.js reads the Decompose panel from


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


class QRDecompose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRADecompose",
            display_name="QR-LoRA Decompose",
            category=CATEGORY,
            description="Decomposes the model's target weights W into orthonormal bases Q (W = QR + W_comp). "
                        "Run once per model: the result is cached under models/qr_lora/bases.",
            inputs=[
                io.Model.Input("model", tooltip="The base model (UNet or DiT) to decompose; its weights are read "
                                                "before any LoRA patches."),
                io.Int.Input("rank", default=64, min=1, max=1024,
                             tooltip="Rank r of each basis Q; ΔR has r rows. The paper uses 64."),
                io.Combo.Input("preset", options=list(PRESETS), default="paper",
                               tooltip="Which weights to adapt. 'paper': the paper's targets for this architecture; "
                                       "'custom': the regular expression below."),
                io.String.Input("custom_regex", default="",
                                tooltip="Regular expression over target names for preset 'custom', e.g. "
                                        "'img_attn\\.qkv' or 'attn1\\.to_(q|k|v)'. Ignored by other presets."),
                io.Combo.Input("method", options=list(METHODS), default="fast",
                               tooltip="'fast': randomized SVD (captures ≥0.99 of the top-r energy, seconds). "
                                       "'exact': full SVD in fp32 as the paper did (minutes)."),
                io.Boolean.Input("use_cache", default=True,
                                 tooltip="Reuse (and store) the decomposition in models/qr_lora/bases, "
                                         "so the second run on the same model is near-instant."),
            ],
            outputs=[
                QRBasis.Output(display_name="QR_BASIS", tooltip="Per-target Q; feed it to Train ΔR."),
                io.Model.Output(display_name="MODEL", tooltip="The input model, unchanged."),
            ],
        )

    @classmethod
    def execute(cls, model, rank, preset, custom_regex, method, use_cache) -> io.NodeOutput:
        check_options(cls, locals())
        basis = decompose_model(model, rank, preset, custom_regex, method, use_cache)
        text = (f"{basis.targets.describe()}\nrank {basis.rank}, method {method}: "
                f"cache {basis.cache_status}, {basis.seconds:.2f} s")
        # The panel in js/qr_lora.js draws the cache state from these values, never from the text.
        state = {"cache": basis.cache_status, "seconds": round(basis.seconds, 3), "rank": basis.rank,
                 "method": method, "targets": basis.targets.describe()}
        return io.NodeOutput(basis, model, ui={**ui.PreviewText(text).as_dict(), BASIS_STATE: [state]})
