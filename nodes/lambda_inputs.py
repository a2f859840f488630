"""λ per block and λ over steps as node inputs (Merge, Export, Schedule and the λ Grid share them)."""

from __future__ import annotations

from comfy_api.latest import io

from ..qr_core.merging.blocks import parse_block_profile, scaled_by_blocks
from ..qr_core.merging.lambda_schedule import CUSTOM_HELP, PRESETS, SCHEDULE_CHOICES


def block_input(what: str) -> io.String.Input:
    return io.String.Input(
        f"block_lambda_{what}", default="", optional=True,
        tooltip=f"λ per block for the {what} ΔR, multiplying λ{what[0]}: 'group=factor' pairs, e.g. SDXL/SD1.5 "
                "'input=1.0, middle=0.5, output=0.8'; SD3 'early, middle, late' (thirds of the joint blocks); FLUX "
                "'double, single'; one block: 'output.3=0'. Empty: every block at λ.")


def block_inputs() -> list:
    """Content and style block profiles: put last, so saved workflows keep their widget order."""
    return [block_input("content"), block_input("style")]


def with_block_profiles(kwargs: dict) -> dict:
    """A copy of the node's inputs with content and style ΔR scaled per block (exact: ΔR per target × factor)."""
    kwargs = dict(kwargs)
    for slot in ("content", "style"):
        text = kwargs.get(f"block_lambda_{slot}") or ""
        if text.strip() and kwargs.get(slot) is not None:
            kwargs[slot] = scaled_by_blocks(kwargs[slot], parse_block_profile(text, kwargs[slot].arch))
    return kwargs


def schedule_inputs() -> list:
    return [
        io.Combo.Input("schedule", options=list(SCHEDULE_CHOICES), default="constant",
                       tooltip="How λc and λs change over the sampling steps (factors of λc, λs from each progress on): "
                               + "; ".join(f"{n} " + ", ".join(f"{p:g}→({c:g}, {s:g})" for p, c, s in pts)
                                           for n, pts in PRESETS.items()) + "; custom: the text below."),
        io.String.Input("custom_schedule", default="0: 1, 0; 0.3: 1, 1", multiline=True,
                        tooltip=f"Used when schedule is 'custom': {CUSTOM_HELP}."),
    ]
