"""ΔR Similarity: per-target cosine similarity of two ΔR as a heatmap (paper Fig. 2/3)."""

from __future__ import annotations

import re

import torch
from comfy_api.latest import io, ui

from ..qr_core.adapters.analysis import delta_similarity, summarize
from .sockets import CATEGORY, QRDeltaType

CELL = 14  # pixels per heatmap cell
_NUMBER = re.compile(r"\d+")


def _layout(names: list[str]) -> tuple[list[str], list[str]]:
    """Rows = blocks (the numbers in a name), columns = layer kinds (the name with numbers blanked)."""
    rows = list(dict.fromkeys(".".join(_NUMBER.findall(n)) for n in names))
    cols = list(dict.fromkeys(_NUMBER.sub("#", n) for n in names))
    return rows, cols


def heatmap(values: dict[str, float]) -> torch.Tensor:
    """IMAGE [1, H, W, 3]: blue (−1) · white (0) · red (+1); grey where a block lacks that layer."""
    names = list(values)
    rows, cols = _layout(names)
    grid = torch.full((len(rows), len(cols), 3), 0.5)
    for n in names:
        r, c = rows.index(".".join(_NUMBER.findall(n))), cols.index(_NUMBER.sub("#", n))
        v = max(-1.0, min(1.0, values[n]))
        pos, neg = max(v, 0.0), max(-v, 0.0)
        grid[r, c] = torch.tensor([1.0 - neg, 1.0 - pos - neg, 1.0 - pos])
    image = grid.repeat_interleave(CELL, 0).repeat_interleave(CELL, 1)
    return image.unsqueeze(0)


class QRDeltaSimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRADeltaSimilarity",
            display_name="QR-LoRA ΔR Similarity",
            category=CATEGORY,
            description="Cosine similarity between the ΔR of two adapters, target by target. Content and style "
                        "ΔR from one basis are nearly orthogonal (paper: max ≈0.26, mean ≈0).",
            is_output_node=True,
            inputs=[
                QRDeltaType.Input("delta_a", tooltip="First ΔR (e.g. content)."),
                QRDeltaType.Input("delta_b", tooltip="Second ΔR (e.g. style)."),
            ],
            outputs=[
                io.Image.Output(display_name="heatmap",
                                tooltip="Rows: blocks; columns: layer kinds; red +1, white 0, blue −1."),
                io.String.Output(display_name="summary", tooltip="max / mean / min similarity over targets."),
            ],
        )

    @classmethod
    def execute(cls, delta_a, delta_b) -> io.NodeOutput:
        values = delta_similarity(delta_a, delta_b)
        if not values:
            raise ValueError("the two ΔR have no target in common: compare ΔR trained with the same preset on one model.")
        s = summarize(values)
        text = f"{len(values)} targets: max {s['max']:.4f}, mean {s['mean']:.4f}, min {s['min']:.4f}"
        if delta_a.basis_fingerprint != delta_b.basis_fingerprint:
            text += "\n(note: trained in different bases Q, so their ΔR rows do not refer to the same directions)"
        return io.NodeOutput(heatmap(values), text, ui=ui.PreviewText(text))
