"""ΔR as ComfyUI weight hooks whose strength follows a λ schedule (comfy/hooks.py's own machinery).

One WeightHook per ΔR, because a keyframe scales a hook's whole strength and content and style need
different λ(t): the hook's patch is the ΔR's exact Q·ΔR term (the same stock LoRA patch Merge applies),
its strength λ, its keyframes the schedule's factors. The sampler then runs each step with
W + Q(λc·c(t)·ΔR_c + λs·s(t)·ΔR_s + Σ λₑ ΔRₑ) on the conditionings the hooks are attached to.
"""

from __future__ import annotations

import comfy.hooks

from ...qr_core import QRDelta, merge
from ...qr_core.merging.lambda_schedule import Schedule
from .model_weights import check_fits
from .patches import lora_patches


def keyframes(schedule: Schedule, column: int) -> comfy.hooks.HookKeyframeGroup:
    """The schedule's factors for one ΔR (column 1: content, 2: style) as keyframes.

    guarantee_steps=0: a keyframe holds only while its start has been reached, so the one active at a step
    is the last whose start_percent the step has passed (Schedule.index_at), however few steps there are.
    """
    group = comfy.hooks.HookKeyframeGroup()
    for point in schedule.points:
        group.add(comfy.hooks.HookKeyframe(strength=point[column], start_percent=point[0], guarantee_steps=0))
    return group


def delta_hook(delta: QRDelta, strength: float,
               keyframe_group: comfy.hooks.HookKeyframeGroup | None = None) -> comfy.hooks.WeightHook:
    """A model-only weight hook adding strength · Q·ΔR, already keyed by the model's state-dict keys."""
    hook = comfy.hooks.WeightHook(strength_model=strength, strength_clip=0.0)
    hook.weights = lora_patches(merge([delta], [1.0]))
    hook.weights_clip = {}
    hook.need_weight_init = False
    if keyframe_group is not None:
        hook.hook_keyframe = keyframe_group
    return hook


def scheduled_hooks(model, deltas: list[QRDelta], weights: list[float], schedule: Schedule,
                    prev_hooks: comfy.hooks.HookGroup | None = None) -> comfy.hooks.HookGroup:
    """Hooks for [content, style, extras...]: content and style follow the schedule, extras keep their λ."""
    check_fits(deltas, model)
    group = comfy.hooks.HookGroup()
    for i, (delta, weight) in enumerate(zip(deltas, weights)):
        group.add(delta_hook(delta, weight, keyframes(schedule, i + 1) if i < 2 else None))
    return prev_hooks.clone_and_combine(group) if prev_hooks is not None else group
