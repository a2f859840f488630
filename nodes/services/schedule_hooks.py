"""ΔR as ComfyUI weight hooks whose strength follows a λ schedule (comfy/hooks.py's own machinery).

One WeightHook per ΔR, because a keyframe scales a hook's whole strength and content and style need
different λ(t): the hook's patch is the ΔR's exact Q·ΔR term (the same stock LoRA patch Merge applies),
its strength λ, its keyframes the schedule's factors. The sampler then runs each step with
W + Q(λc·c(t)·ΔR_c + λs·s(t)·ΔR_s + Σ λₑ ΔRₑ) on the conditionings the hooks are attached to.
"""

from __future__ import annotations

import logging

import comfy.hooks

from ...qr_core import QRDelta, RuntimeSupportError, merge
from ...qr_core.merging.lambda_schedule import Schedule
from .model_weights import check_fits, is_dynamic
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


def hooks_on_dynamic_vram(model, where: str) -> str | None:
    """None where weight hooks run on `model` as they are; a note where ComfyUI must reload it; an error where it cannot.

    Dynamic VRAM (ComfyUI ≥ 0.12, the default on NVIDIA) applies no weight
    hooks: its patcher raises "Hooks not implemented in ModelPatcherDynamic".
    Since 0.33 ComfyUI's guider samples a conditioning that carries hooks on a
    non-dynamic copy instead (`get_non_dynamic_delegate`), reloaded from disk
    through the loader's `cached_patcher_init`; loaders without one (GGUF and
    other custom loaders) make that raise. Checked before sampling, so the
    user learns the way out instead of ComfyUI's internal error.
    """
    if not is_dynamic(model):
        return None
    reloadable = callable(getattr(model, "get_non_dynamic_delegate", None)) and (
        getattr(model, "cached_patcher_init", None) is not None
        or getattr(model, "non_dynamic_delegate_model", None) is not None)
    if not reloadable:
        raise RuntimeSupportError(
            f"{where}: this model runs with ComfyUI's dynamic VRAM, which applies no weight hooks (λ over steps), "
            "and its loader gave ComfyUI no way to reload it as a non-dynamic copy (no cached_patcher_init: GGUF "
            "and other custom loaders). Start ComfyUI with --disable-dynamic-vram, or load the model with a core loader "
            "(Load Checkpoint, Load Diffusion Model), or keep λ fixed over the steps (Merge ΔR; λ Grid rows over "
            "λc or block profiles), which works with dynamic VRAM.")
    note = ("dynamic VRAM: ComfyUI samples these hooks on a non-dynamic copy of the model that it reloads from "
            "disk (one more load, and that copy's weights in memory); --disable-dynamic-vram avoids the reload")
    logging.warning("QR-LoRA %s: %s", where, note)
    return note


def scheduled_hooks(model, deltas: list[QRDelta], weights: list[float], schedule: Schedule,
                    prev_hooks: comfy.hooks.HookGroup | None = None) -> comfy.hooks.HookGroup:
    """Hooks for [content, style, extras...]: content and style follow the schedule, extras keep their λ."""
    check_fits(deltas, model)
    group = comfy.hooks.HookGroup()
    for i, (delta, weight) in enumerate(zip(deltas, weights)):
        group.add(delta_hook(delta, weight, keyframes(schedule, i + 1) if i < 2 else None))
    return prev_hooks.clone_and_combine(group) if prev_hooks is not None else group
