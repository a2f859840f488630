"""λ over sampling steps: one definition of a schedule, used by the ComfyUI hooks node and the world's sampler.

A schedule is a list of points (progress, content factor, style factor), progress 0 = the first
(noisiest) step and 1 = the end. Each point holds from its progress until the next point: a step
function, because that is what ComfyUI's hook keyframes are (a keyframe's strength applies from its
start_percent until the next keyframe starts). The factors multiply the global λc and λs, so at a step
the model runs with W + Q(λc·c(t)·ΔR_c + λs·s(t)·ΔR_s).

A point is active at a step whose noise level t is at or below the point's start, t_start =
percent_to_t(progress): ComfyUI's `model_sampling.percent_to_sigma` in the sampler, 1 − progress on the
world's rectified flow (t runs from 1 to 0 there).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from ..errors import SettingError


@dataclass(frozen=True)
class Schedule:
    name: str
    points: tuple[tuple[float, float, float], ...]  # (progress, content factor, style factor), progress ascending

    def index_at(self, t: float, percent_to_t: Callable[[float], float] = lambda p: 1.0 - p) -> int:
        """Index of the point active at noise level `t` (the last one whose start is at or above t)."""
        active = 0
        for i, (progress, _, _) in enumerate(self.points):
            if percent_to_t(progress) >= t:
                active = i
            else:
                break
        return active

    def factors_at(self, t: float, percent_to_t: Callable[[float], float] = lambda p: 1.0 - p) -> tuple[float, float]:
        """(content factor, style factor) at noise level `t`."""
        _, c, s = self.points[self.index_at(t, percent_to_t)]
        return c, s

    def describe(self) -> str:
        return f"{self.name}: " + "; ".join(f"{p:g}: {c:g}, {s:g}" for p, c, s in self.points)


# Factors of (λc, λs) from each progress on. Content layout forms in the first, noisy steps and texture in the
# last ones (the hypothesis, measured in bench/results/disentangle.md and disentangle_points_v1.md),
# hence the shapes below.
PRESETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "constant": ((0.0, 1.0, 1.0),),
    "style-late": ((0.0, 1.0, 0.0), (0.3, 1.0, 1.0)),
    "content-early": ((0.0, 1.0, 1.0), (0.5, 0.0, 1.0)),
    "content-early-style-late": ((0.0, 1.0, 0.0), (0.5, 0.0, 1.0)),
    "crossfade": ((0.0, 1.0, 0.25), (0.25, 1.0, 0.5), (0.5, 0.75, 1.0), (0.75, 0.5, 1.0)),
    "style-early-content-late": ((0.0, 0.0, 1.0), (0.5, 1.0, 0.0)),
}
CUSTOM = "custom"
SCHEDULE_CHOICES = tuple(PRESETS) + (CUSTOM,)
CUSTOM_HELP = ("one point per line or ';'-separated, each 'progress: content, style' (factors of λc, λs), progress "
               "from 0 (first step) to 1 rising, the first at 0; e.g. '0: 1, 0; 0.3: 1, 1'")


def parse_points(text: str) -> tuple[tuple[float, float, float], ...]:
    """'0: 1, 0; 0.3: 1, 1' (or one 'progress, content, style' per line) → checked points."""
    points = []
    for part in re.split(r"[;\n]", text or ""):
        part = part.strip()
        if not part:
            continue
        fields = [f for f in re.split(r"[,:\s]+", part) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise SettingError(f"schedule point {part!r} is not three numbers; {CUSTOM_HELP}.")
        points.append(tuple(values))
    if not points:
        raise SettingError(f"the custom schedule is empty; {CUSTOM_HELP}.")
    progress = [p for p, _, _ in points]
    if progress[0] != 0.0:
        raise SettingError(f"the custom schedule starts at progress {progress[0]:g}; the first point must be at 0 "
                           f"(it sets λ from the first step). {CUSTOM_HELP}.")
    if any(not 0.0 <= p <= 1.0 for p in progress) or any(b <= a for a, b in zip(progress, progress[1:])):
        raise SettingError(f"the custom schedule's progress values {progress} must rise strictly within 0…1; "
                           f"{CUSTOM_HELP}.")
    return tuple(points)


def resolve_schedule(preset: str, custom: str = "") -> Schedule:
    """A preset by name, or "custom" with its points as text; an unknown name lists the valid ones."""
    if preset == CUSTOM:
        return Schedule(CUSTOM, parse_points(custom))
    if preset not in PRESETS:
        raise SettingError(f"unknown λ schedule {preset!r}; choose one of {', '.join(SCHEDULE_CHOICES)} "
                           f"('{CUSTOM}': {CUSTOM_HELP}).")
    return Schedule(preset, PRESETS[preset])
