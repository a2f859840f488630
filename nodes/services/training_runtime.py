"""ComfyUI's model code made safe to differentiate for the length of one training run.

Newer ComfyUI runs inference kernels that have no backward, and (with
dynamic VRAM) keeps cast weights in buffers it reuses. Each mechanism is
feature-detected on the ComfyUI at hand, switched for the run, and every
global it touches is restored afterwards, on error and cancel too:

- `comfy.model_management.in_training` (ComfyUI ≥ 0.14): ComfyUI's own
  switch; its model code then takes differentiable paths.
- `comfy.model_management.training_fp8_bwd`: the built-in trainer sets it
  from its `quantized_backward` input and never resets it; while it is on,
  quantized Linear layers (ComfyUI's QuantLinearFunc) compute their input
  gradient, the one ΔR's gradient flows through, with FP8 matmuls. Off for
  the run, so ΔR's gradients are those of the dequantized weights.
- comfy-kitchen kernels bound into model modules (ComfyUI 0.8–0.13: FLUX's
  RoPE is `comfy_kitchen.apply_rope`, a custom op with no autograd formula):
  every `comfy.*` module's binding of such a kernel is replaced by the torch
  reference it computes, for the run. Model code that calls the kernel through
  the module (ComfyUI 0.33's ERNIE-Image: `ck.apply_rope_split_half` even on its
  training path; Cosmos/Anima: `ck.rms_rope_split_half`) gets the same
  replacement on comfy_kitchen itself; those references are the plain-torch
  functions of comfy-kitchen's own eager backend.
- Dynamic VRAM (`ModelPatcher.is_dynamic()`, ComfyUI ≥ 0.12): see
  `weights_need_recompute` and `recast_inference_casts`.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import torch

import comfy.model_management

from .model_weights import is_dynamic


def _rope1(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """FLUX's rotary embedding in plain torch (what ComfyUI runs without comfy-kitchen)."""
    x_ = x.to(dtype=freqs_cis.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    x_out = freqs_cis[..., 0] * x_[..., 0] + freqs_cis[..., 1] * x_[..., 1]  # out of place: autograd-safe
    return x_out.reshape(*x.shape).type_as(x)


def _rope(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _rope1(xq, freqs_cis), _rope1(xk, freqs_cis)


# comfy-kitchen's split-half and norm-fused RoPE kernels (custom ops without autograd), whose eager
# backend holds the same computation in differentiable torch.
_EAGER_ROPE = ("apply_rope_split_half", "apply_rope_split_half1", "rms_rope", "rms_rope1", "rms_rope_split_half",
               "rms_rope_split_half1")


def _kitchen():
    return getattr(sys.modules.get("comfy.quant_ops"), "ck", None)


def kernels_without_autograd() -> dict:
    """Inference kernels this ComfyUI binds into model code → their differentiable reference."""
    kitchen = _kitchen()
    if kitchen is None:
        return {}
    pairs = {getattr(kitchen, "apply_rope", None): _rope, getattr(kitchen, "apply_rope1", None): _rope1}
    try:
        import comfy_kitchen.backends.eager as eager
    except ImportError:
        eager = None
    for name in _EAGER_ROPE:
        if eager is not None and hasattr(eager, name):
            pairs[getattr(kitchen, name, None)] = getattr(eager, name)
    return {k: v for k, v in pairs.items() if k is not None}


@contextlib.contextmanager
def _reference_kernels() -> Iterator[int]:
    """Replace every comfy.* module's binding of a kernel without autograd, and comfy_kitchen's own
    (model code that calls `ck.<kernel>`); yields how many were replaced."""
    kernels = kernels_without_autograd()
    swapped = []
    if kernels:
        kitchen_name = _kitchen().__name__
        for name, module in list(sys.modules.items()):
            if module is None or not (name in ("comfy", kitchen_name) or name.startswith("comfy.")):
                continue
            for attr, value in list(vars(module).items()):
                if callable(value) and value in kernels:
                    swapped.append((module, attr, value))
    try:
        for module, attr, value in swapped:
            setattr(module, attr, kernels[value])
        yield len(swapped)
    finally:
        for module, attr, value in swapped:
            setattr(module, attr, value)


@contextlib.contextmanager
def _model_management_flag(name: str, value: bool) -> Iterator[None]:
    """comfy.model_management.<name> set to `value` for the duration, where this ComfyUI has it."""
    if not hasattr(comfy.model_management, name):
        yield
        return
    before = getattr(comfy.model_management, name)
    setattr(comfy.model_management, name, value)
    try:
        yield
    finally:
        setattr(comfy.model_management, name, before)


@contextlib.contextmanager
def differentiable_model_code() -> Iterator[None]:
    """ComfyUI's differentiable code paths for the duration; every changed global restored afterwards."""
    with _model_management_flag("in_training", True), _model_management_flag("training_fp8_bwd", False), \
            _reference_kernels():
        yield


def weights_need_recompute(model) -> bool:
    """Whether autograd must not keep the weights a forward used.

    A dynamic-VRAM model (ComfyUI ≥ 0.12, the default on NVIDIA from late
    2026) casts each layer's weight into a buffer that the next layer reuses:
    a weight saved for backward (the frozen Linear's input gradient needs it)
    would be overwritten by then, and ΔR's gradient silently wrong. Two ways
    out: a non-dynamic clone with a full load (it needs ComfyUI to reload the
    whole model, and the full model in VRAM, which dynamic VRAM exists to
    avoid), or recomputing each layer's forward in its backward, which casts
    the weight again right where it is used. The second is what ComfyUI's own
    trainer does; it costs one more forward matmul per layer in backward.
    """
    return is_dynamic(model)


def recast_inference_casts(root: torch.nn.Module) -> int:
    """Mark layers whose resident cast weight is an inference tensor for a new cast; returns how many.

    Dynamic VRAM (ComfyUI 0.33) keeps a layer's cast weight in VRAM and reuses
    it (`_v_weight`, `_v_bias`) while its residency signature (`_v_signature`)
    still matches. A cast made while sampling, inside inference mode, is an
    inference tensor, which autograd refuses to save for backward. Clearing
    the signature is what ComfyUI's own dirty load does: the next forward,
    in the training loop, casts the weight again from RAM, outside inference mode.
    """
    count = 0
    for m in root.modules():
        cached = (getattr(m, "_v_weight", None), getattr(m, "_v_bias", None))
        if hasattr(m, "_v_signature") and any(isinstance(t, torch.Tensor) and t.is_inference() for t in cached):
            m._v_signature = None
            count += 1
    return count
