"""Row-side decorrelation of content and style ΔR as a node input (Merge, Export, λ over Steps, λ Grid)."""

from __future__ import annotations

from comfy_api.latest import io

from ..qr_core.merging import decorrelate as decorrelation


def decorrelate_input() -> io.Combo.Input:
    """Optional and off by default: workflows and API prompts saved before it merge as they did."""
    return io.Combo.Input("decorrelate", options=list(decorrelation.MODES), default=decorrelation.OFF, optional=True,
                          tooltip="Row-side decorrelation before merging (both ΔR share span(Q), so only the input "
                                  "directions they read can be separated): " + decorrelation.MODES_HELP + ".")


def decorrelated(kwargs: dict, mode: str) -> dict:
    """The node's inputs with content and style ΔR decorrelated (before block profiles: the projector is scale-free)."""
    if mode == decorrelation.OFF or kwargs.get("content") is None or kwargs.get("style") is None:
        return kwargs
    kwargs = dict(kwargs)
    kwargs["content"], kwargs["style"] = decorrelation.decorrelate(kwargs["content"], kwargs["style"], mode)
    return kwargs
