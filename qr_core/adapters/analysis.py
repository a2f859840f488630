"""Comparing ΔR: the paper's similarity analysis (Fig. 2/3, Table 4)."""

from __future__ import annotations

import torch

from .delta import QRDelta


def delta_similarity(a: QRDelta, b: QRDelta) -> dict[str, float]:
    """Cosine similarity of the flattened ΔR of every target the two have in common (0 where one is zero)."""
    out = {}
    for name in a.targets.names():
        if name not in b.delta or a.delta[name].shape != b.delta[name].shape:
            continue
        x, y = a.delta[name].flatten().double(), b.delta[name].flatten().double()
        denom = x.norm() * y.norm()
        out[name] = float(x @ y / denom) if denom > 0 else 0.0
    return out


def summarize(values: dict[str, float]) -> dict[str, float]:
    """max, mean and min over targets (the paper reports them per pair of ΔR)."""
    if not values:
        return {"max": float("nan"), "mean": float("nan"), "min": float("nan")}
    v = torch.tensor(list(values.values()), dtype=torch.float64)
    return {"max": float(v.max()), "mean": float(v.mean()), "min": float(v.min())}
