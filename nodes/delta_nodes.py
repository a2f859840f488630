"""Load ΔR and Save ΔR: self-contained ΔR files in models/qr_lora."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..qr_core import QRDelta
from ..qr_core.delta import DTYPES
from . import bridge
from .options import check_options
from .sockets import CATEGORY, QRBasis, QRDeltaType


def load_delta(file_name: str, model=None, basis=None) -> QRDelta:
    """Read a ΔR file from models/qr_lora, refusing one made for another architecture or rank."""
    path = bridge.input_path(bridge.FOLDER, file_name)
    expect_arch = basis.arch if basis is not None else (bridge.model_arch(model) if model is not None else None)
    delta = QRDelta.load(path, expect_arch=expect_arch, expect_rank=basis.rank if basis is not None else None)
    if model is not None:
        bridge.check_deltas_fit([delta], model)
    return delta


def describe(delta: QRDelta) -> str:
    head = (f"{delta.name or 'ΔR'}: {delta.arch.upper()}, rank {delta.rank}, mode {delta.mode}"
            f"{', triangular (' + delta.triangular_basis + ' basis)' if delta.triangular else ''}, "
            f"{len(delta.targets)} targets ({delta.targets.preset}), trigger words: {delta.trigger_words or '—'}")
    return head + ("\n" + training_summary(delta.training) if delta.training else "")


def training_summary(training: dict) -> str:
    """One line from a ΔR file's training record (what Train ΔR wrote), or its merge record."""
    if "merged_from" in training:
        parts = ", ".join(f"{n or '?'} × {w:g}" for n, w in zip(training["merged_from"], training.get("weights", [])))
        return f"merged: {parts}"
    items = [("steps", training.get("steps_done", training.get("steps"))), ("lr", training.get("lr")),
             ("optimizer", training.get("optimizer")), ("noise", training.get("timestep_sampling")),
             ("loss", training.get("loss_space")), ("final loss", training.get("final_loss")),
             ("resumed from", training.get("resumed_from"))]
    return "trained: " + ", ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in items if v is not None)


class QRLoadDelta(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRALoadDelta",
            display_name="QR-LoRA Load ΔR",
            category=CATEGORY,
            description="Loads a ΔR file from models/qr_lora (it carries its own Q).",
            inputs=[
                io.Combo.Input("delta_file", options=bridge.delta_file_names(),
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
                                tooltip="File name in models/qr_lora (no extension needed); an existing file is replaced."),
                io.Combo.Input("dtype", options=list(DTYPES), default="bf16",
                               tooltip="Storage precision: bf16 halves the size of fp32 at a small rounding cost."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, delta, save_name, dtype) -> io.NodeOutput:
        check_options(cls, locals())
        path = bridge.output_path(bridge.FOLDER, save_name)
        delta.save(path, dtype)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name} ({dtype})\n{describe(delta)}"))
