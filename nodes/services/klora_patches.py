"""K-LoRA on a ComfyUI model: on each planned layer, per sampling step, the content or the style adapter's patch.

The adapters come as ComfyUI patch dicts (patch key -> weight adapter): a ΔR's stock LoRA patches, or what
`comfy.lora.load_lora` makes of a LoRA file. The plan (qr_core.merging.klora) is computed once here; the step
reaches it through two of ComfyUI's own mechanisms, so that any sampler and ComfyUI's offloading work with it:
- an APPLY_MODEL wrapper maps the call's sigma to its step in the sampler's `sample_sigmas` (progress n/N);
- a weight wrapper per planned weight (`add_weight_wrapper`, as ComfyUI's trainer uses) adds, in each forward
  and after ComfyUI's own patches, the patch of the adapter the plan picks at that progress.
Layers only one adapter patches, and layers outside the plan, get ordinary static patches.
"""

from __future__ import annotations

import logging
import re
import uuid

import torch

import comfy.lora
import comfy.lora_convert
import comfy.model_management
import comfy.patcher_extension
import comfy.utils
import comfy.weight_adapter

from ...qr_core import TargetError, select_targets
from ...qr_core.merging.klora import KLoRAPlan, klora_plan, step_progress
from .model_weights import DIFFUSION_PREFIX, base_weight_getter, core_model, model_shapes

LAYERS = ("attention", "all")
LAYERS_HELP = ("attention: K-LoRA chooses on attention layers (the paper's rule; other layers apply both adapters, "
               "added); all: on every layer both adapters patch (what the reference code does with FLUX LoRAs "
               "that patch every layer)")
WRAPPER_KEY = "qr_lora_klora"
_ATTENTION_NAME = re.compile(r"attn|attention")


def _split(patch_key) -> tuple[str, int | None, int | None]:
    """(weight key, first row, end row) of a patch key; (key, None, None) for the whole weight."""
    if isinstance(patch_key, str):
        return patch_key, None, None
    if patch_key[1] is None:
        return patch_key[0], None, None
    dim, offset, size = patch_key[1][:3]
    return (patch_key[0], offset, offset + size) if dim == 0 else (patch_key[0], None, None)


def _offset(patch_key):
    """The offset ComfyUI's add_patches reads from a patch key (None for the whole weight)."""
    return None if isinstance(patch_key, str) else patch_key[1]


def attention_layers(model, patch_keys) -> set:
    """The patch keys on attention weights: rows that overlap a target of the pack's 'attention' preset, or, on a
    model the presets do not know, a weight whose name says attn/attention."""
    try:
        targets = select_targets(model_shapes(model), "attention", core=core_model(model))
    except TargetError:
        targets = None
    rows: dict[str, list[tuple[int, int]]] = {}
    if targets is not None:
        for t in targets:
            full = targets.shapes[t.key][0]
            r = t.rows(full)
            rows.setdefault(DIFFUSION_PREFIX + t.key, []).append((r.start, r.stop))
    out = set()
    for patch_key in patch_keys:
        key, start, stop = _split(patch_key)
        if targets is None:
            if _ATTENTION_NAME.search(key):
                out.add(patch_key)
        elif any(start is None or (start < b and a < stop) for a, b in rows.get(key, ())):
            out.add(patch_key)
    return out


def adapter_update(model, patch_key, adapter):
    """The update a patch adds, for scoring: (up, down) for a plain LoRA (alpha/rank folded into up, as ComfyUI
    applies it), else the dense ΔW ComfyUI's own calculate_weight adds to the layer's weight (LoHa, LoKr, DoRA,
    diff patches...), on the patch's rows."""
    if isinstance(adapter, comfy.weight_adapter.LoRAAdapter):
        up, down, alpha, mid, dora_scale, reshape = adapter.weights[:6]
        if mid is None and dora_scale is None and reshape is None:
            scale = alpha / down.shape[0] if alpha is not None else 1.0
            return up.flatten(1).float() * scale, down.flatten(1).float()
    key, start, stop = _split(patch_key)
    offset = _offset(patch_key)
    weight = base_weight_getter(model)(key[len(DIFFUSION_PREFIX):]).float()
    patched = comfy.lora.calculate_weight([(1.0, adapter, 1.0, offset, None)], weight.clone(), key)
    delta = patched - weight
    return delta[start:stop] if start is not None else delta


def plan_layers(model, content: dict, style: dict, layers: str) -> set:
    if layers not in LAYERS:
        raise ValueError(f"K-LoRA layers must be one of {', '.join(LAYERS)}, not {layers!r}.")
    shared = {k for k in content if k in style}
    return shared if layers == "all" else shared & attention_layers(model, shared)


class _Step:
    """The progress of the model call in flight and the layers that apply the content adapter at it."""

    def __init__(self, plan: KLoRAPlan):
        self.plan = plan
        self.progress = None
        self.content = plan.content_layers(0.0)
        self.warned = False

    def set(self, sigma: float, sigmas) -> None:
        if sigmas is None:
            if not self.warned:
                logging.warning("QR-LoRA K-LoRA: this sampler passes no sample_sigmas; every step uses the first "
                                "step's choice.")
                self.warned = True
            progress = 0.0
        else:
            progress = step_progress(sigma, sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)
        if progress != self.progress:
            self.progress = progress
            self.content = self.plan.content_layers(progress)


def _step_wrapper(step: _Step):
    def wrapper(executor, x, t, *args, **kwargs):
        options = args[3] if len(args) > 3 else kwargs.get("transformer_options", {})
        step.set(float(t.flatten()[0]), (options or {}).get("sample_sigmas"))
        return executor(x, t, *args, **kwargs)
    return wrapper


def _weight_wrapper(key: str, units: list, step: _Step, content: dict, style: dict, lc: float, ls: float):
    """fn(weight) -> weight + the chosen adapter's patch on each planned slice of `key`."""
    def apply(weight):
        patches = [(lc, content[u], 1.0, _offset(u), None) if u in step.content else (ls, style[u], 1.0, _offset(u), None)
                   for u in units]
        return comfy.lora.calculate_weight(patches, weight, key, intermediate_dtype=weight.dtype)
    return apply


def klora_onto(model, content: dict, style: dict, lambda_content: float, lambda_style: float,
               pattern: str = "s*", layers: str = "attention", alpha: float | None = None,
               beta: float | None = None):
    """(a clone of `model` sampling with K-LoRA, its plan). `content`/`style`: patch key -> weight adapter."""
    planned = plan_layers(model, content, style, layers)
    device = comfy.model_management.get_torch_device()
    plan = klora_plan({k: adapter_update(model, k, content[k]) for k in planned},
                      {k: adapter_update(model, k, style[k]) for k in planned}, pattern, alpha, beta, device=device)
    patched = model.clone()
    static_c = {k: v for k, v in content.items() if k not in planned}
    static_s = {k: v for k, v in style.items() if k not in planned}
    for patches, strength in ((static_c, lambda_content), (static_s, lambda_style)):
        if patches:
            patched.add_patches(patches, strength)
    step = _Step(plan)
    by_key: dict[str, list] = {}
    for unit in planned:
        by_key.setdefault(_split(unit)[0], []).append(unit)
    for key, units in by_key.items():
        patched.add_weight_wrapper(key, _weight_wrapper(key, sorted(units, key=str), step, content, style,
                                                        float(lambda_content), float(lambda_style)))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, _step_wrapper(step))
    # Weight wrappers are installed when ComfyUI loads the model, and it reloads only for new patches: a fresh
    # patches id makes it load this clone (and the next model sampled after it) anew.
    patched.patches_uuid = uuid.uuid4()
    return patched, plan


def lora_file_patches(model, path: str) -> dict:
    """A LoRA file's diffusion-model patches, keyed as ComfyUI's own LoRA loader keys them (kohya, diffusers, PEFT
    and ComfyUI namings; text-encoder layers are left out: K-LoRA acts on the diffusion model)."""
    if not str(path).lower().endswith(".safetensors"):
        raise ValueError(f"{path}: K-LoRA reads .safetensors LoRA files only (a .pt/.ckpt file can run code when "
                         "loaded); convert it or pick another file.")
    state = comfy.lora_convert.convert_lora(comfy.utils.load_torch_file(str(path), safe_load=True))
    patches = comfy.lora.load_lora(state, comfy.lora.model_lora_keys_unet(model.model, {}), log_missing=False)
    if not patches:
        raise ValueError(f"{path}: none of its layers belongs to this model's diffusion model (a LoRA for another "
                         "model, or a text-encoder-only LoRA); pick a LoRA trained on this base model.")
    return patches
