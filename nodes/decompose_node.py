"""QR-LoRA Decompose: the model's target weights → orthonormal bases Q (cached on disk)."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..qr_core import PRESETS
from ..qr_core.bases.decompose import METHODS
from .services.model_basis import decompose_model
from .options import check_options
from .sockets import CATEGORY, QRBasis

BASIS_STATE = "qr_lora_basis"  # the ui key js/qr_lora.js reads the Decompose panel from


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
