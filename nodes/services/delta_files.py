"""ΔR files in models/qr_lora as the nodes read and describe them."""

from __future__ import annotations

from ...qr_core import QRDelta
from . import folders
from .model_weights import check_fits


def load_delta(file_name: str, model=None, basis=None) -> QRDelta:
    """Read a ΔR file from models/qr_lora, refusing one made for another architecture or rank."""
    path = folders.input_path(folders.FOLDER, file_name)
    delta = QRDelta.load(path, expect_arch=basis.arch if basis is not None else None,
                         expect_rank=basis.rank if basis is not None else None)
    if model is not None:
        check_fits([delta], model)
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
             ("resumed from", training.get("resumed_from")), ("training s", training.get("train_seconds")),
             ("previews s", training.get("preview_seconds") or None)]
    return "trained: " + ", ".join(f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in items if v is not None)
