"""Learning-rate schedules: the rate of every optimizer step is a function of the step alone.

Being a pure function of the step (not an object with its own counter, like
torch's LR schedulers) is what makes a resume exact: the schedule's position
is the step the training state records, nothing more.
"""

from __future__ import annotations

import math

from ..errors import SettingError

LR_SCHEDULES = ("constant", "cosine", "linear")


def check_schedule(schedule: str, warmup_steps: int) -> None:
    if schedule not in LR_SCHEDULES:
        raise SettingError(f"learning-rate schedule must be one of {LR_SCHEDULES}, not {schedule!r}")
    if warmup_steps < 0:
        raise SettingError(f"warm-up steps must be ≥ 0, not {warmup_steps}")


def lr_factor(step: int, steps: int, schedule: str = "constant", warmup_steps: int = 0) -> float:
    """The multiple of the base learning rate for optimizer step `step` (0-based) of `steps`.

    Warm-up rises linearly over the first `warmup_steps` steps: step i gets
    (i + 1) / warmup_steps, so the first step already moves and the last
    warm-up step reaches the full rate (as diffusers' `get_*_schedule_with_warmup`
    with the step counted after it is taken). After the warm-up, `cosine` falls
    as ½(1 + cos(π·p)) and `linear` as 1 − p, with p the fraction of the
    remaining steps already taken: the last step trains at a small positive rate,
    not 0 (a step at rate 0 would be a wasted forward and backward).
    """
    check_schedule(schedule, warmup_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(steps - warmup_steps, 1)
    p = (step - warmup_steps) / decay_steps
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    return 1.0 - p
