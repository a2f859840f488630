"""A ComfyUI model's base weights and shapes as qr_core reads them, and what it takes to train on them."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

import comfy.model_patcher

from ...qr_core import Basis, CoreModel, QRDelta, detect_architecture

DIFFUSION_PREFIX = "diffusion_model."


def model_shapes(model) -> dict[str, tuple[int, ...]]:
    """Diffusion-model state-dict keys (without the prefix) to shapes."""
    return {k: tuple(v.shape) for k, v in model.model.diffusion_model.state_dict().items()}


def core_model(model) -> CoreModel | None:
    """ComfyUI's identification of the model: the comfy.supported_models config class (and its bases) that
    comfy.model_detection chose when loading it, with the unet_config it read. None for a config class from
    elsewhere (a custom loader's), whose model the key rules then name."""
    config = getattr(model.model, "model_config", None)
    classes = tuple(c.__name__ for c in type(config).__mro__
                    if c.__module__ == "comfy.supported_models") if config is not None else ()
    if not classes:
        return None
    unet_config = getattr(config, "unet_config", None) or {}
    return CoreModel(classes, {k: v for k, v in unet_config.items() if isinstance(v, (str, bool, int, float))})


def base_weight_getter(model) -> Callable[[str], torch.Tensor]:
    """get_weight(key) for qr_core: the weight as loaded, before any patch.

    Patched weights are read from the patcher's backups (what unpatching
    restores). A weight is returned as stored (fp8 included: qr_core casts the
    rows it uses, and fingerprints sample it without a full copy); scaled-fp8
    layers (ComfyUI 0.3: `scale_weight`; from 0.8: `QuantizedTensor`) go
    through their own `convert_weight`, the conversion ComfyUI applies before
    patching, and come back dequantized in fp32.

    The same rule as ModelPatcher.get_key_patches (identical on every version
    the pack supports), read per key: that method builds the whole state dict on
    each call and hides "no conversion" behind an identity function, which would
    force an fp32 copy of every weight where the stored one serves.
    """
    def get(key: str) -> torch.Tensor:
        full = DIFFUSION_PREFIX + key
        weight, _, convert = comfy.model_patcher.get_key_weight(model.model, full)
        if full in model.backup:
            weight = model.backup[full].weight
        if full in model.hook_backup:
            weight = model.hook_backup[full][0]
        if convert is None:
            return weight.detach()
        with torch.no_grad():  # a reading: never part of a graph, whatever the layer's flags say
            return convert(weight.to(torch.float32, copy=True), inplace=True)
    return get


def is_dynamic(model) -> bool:
    """Whether `model` runs with ComfyUI's dynamic VRAM (`ModelPatcher.is_dynamic()`, ComfyUI ≥ 0.12)."""
    method = getattr(model, "is_dynamic", None)
    return bool(method()) if callable(method) else False


def check_fits(items: Iterable[QRDelta | Basis], model) -> None:
    """Refuse ΔR or bases made for another architecture or model size (the model's shapes are read once)."""
    shapes = model_shapes(model)
    arch = detect_architecture(shapes, core_model(model))
    for item in items:
        item.check_model(shapes, arch)


def _normal_alias(t: torch.Tensor) -> torch.Tensor:
    """A tensor outside inference mode on the very memory of `t` (no copy): same storage, offset, shape, strides."""
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(
        t.untyped_storage(), t.storage_offset(), t.size(), t.stride())


def release_inference_tensors(module: torch.nn.Module) -> int:
    """Replace inference-mode parameters and buffers by ordinary tensors on the same memory.

    ComfyUI loads models inside torch.inference_mode(); autograd can neither
    save such tensors for backward nor index them, even when they need no
    gradient. Swapping `.data` is not enough (the tensor object keeps no
    version counter), so the module entries themselves are replaced, one
    tensor at a time, by aliases of their storage: no weight is copied. A copy
    would be a second model in memory for as long as ComfyUI keeps the model
    (the model is shared with every clone of its patcher), and on dynamic VRAM
    (ComfyUI ≥ 0.12), whose weights are mapped zero-copy from the file, it
    would turn file-backed pages into a full anonymous copy. Returns the count.
    Tensor subclasses (ComfyUI ≥ 0.8's QuantizedTensor) stay: the forward
    dequantizes them into fresh tensors, and an alias made outside inference
    mode would hold inference-mode data inside a wrapper that no longer says so.
    """
    count = 0
    with torch.inference_mode(False), torch.no_grad():
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.is_inference() and type(p) is torch.nn.Parameter:
                    mod._parameters[name] = torch.nn.Parameter(_normal_alias(p), requires_grad=p.requires_grad)
                    count += 1
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_inference():
                    mod._buffers[name] = _normal_alias(b) if type(b) is torch.Tensor else b.clone()
                    count += 1
    return count
