"""The pack's seed inputs: a seed that stays put unless the user asks the front end to change it.

The front end gives every INT input named `seed` a "control after generate" widget, which defaults to
*randomize*: a Train ΔR added from the node search would then retrain on every queue. ComfyUI versions whose
io.Int takes a ControlAfterGenerate value tell the front end to start at "fixed" through /object_info; older
versions take only a bool there (and their front ends start at "randomize" whatever it says), so
js/qr_lora_seed.js sets a new node's control to "fixed" on those.
"""

from __future__ import annotations

from comfy_api.latest import io

# None on versions without it: the input then declares nothing, as before (the front end adds the control).
FIXED = getattr(getattr(io, "ControlAfterGenerate", None), "fixed", None)
FIXED_NOTE = " The control after generate starts at 'fixed': the node reruns only when you change something."


def seed_input(tooltip: str) -> io.Int.Input:
    return io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=FIXED,
                        tooltip=tooltip + FIXED_NOTE)
