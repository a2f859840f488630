"""Load ΔR and Save ΔR: self-contained ΔR files in models/qr_lora."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..qr_core.adapters.delta import DTYPES
from .services import folders
from .services.delta_files import describe, load_delta
from .options import check_options
from .sockets import CATEGORY, QRBasis, QRDeltaType


class QRLoadDelta(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRALoadDelta",
            display_name="QR-LoRA Load ΔR",
            category=CATEGORY,
            description="Loads a ΔR file from models/qr_lora (it carries its own Q).",
            inputs=[
                io.Combo.Input("delta_file", options=folders.delta_file_names(),
                               tooltip="A ΔR file in models/qr_lora (saved by Train ΔR or Save ΔR)."),
                io.Model.Input("model", optional=True,
                               tooltip="Optional: refuse the file unless it fits this model's architecture and sizes."),
                QRBasis.Input("basis", optional=True,
                              tooltip="Optional: refuse the file unless it has this basis's architecture and rank."),
            ],
            outputs=[QRDeltaType.Output(display_name="QR_DELTA", tooltip="The loaded ΔR.")],
        )

    @classmethod
    def execute(cls, delta_file, model=None, basis=None) -> io.NodeOutput:
        delta = load_delta(delta_file, model, basis)
        return io.NodeOutput(delta, ui=ui.PreviewText(describe(delta)))


class QRSaveDelta(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRASaveDelta",
            display_name="QR-LoRA Save ΔR",
            category=CATEGORY,
            description="Saves a ΔR (trained, loaded or merged) as a self-contained file in models/qr_lora.",
            is_output_node=True,
            inputs=[
                QRDeltaType.Input("delta", tooltip="The ΔR to save."),
                io.String.Input("save_name", default="qr_delta",
                                tooltip="File name in models/qr_lora (no extension needed); an existing file is "
                                        "kept unless overwrite is on."),
                io.Combo.Input("dtype", options=list(DTYPES), default="bf16",
                               tooltip="Storage precision: bf16 halves the size of fp32 at a small rounding cost."),
                io.Boolean.Input("overwrite", default=False, optional=True, tooltip=folders.OVERWRITE_HELP),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, delta, save_name, dtype, overwrite=False) -> io.NodeOutput:
        check_options(cls, {"dtype": dtype})
        path, note = folders.save_path(folders.FOLDER, save_name, overwrite)
        delta.save(path, dtype)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name} ({dtype})" + (f"; {note}" if note else "")
                                               + f"\n{describe(delta)}"))
