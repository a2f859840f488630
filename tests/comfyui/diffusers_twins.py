"""Test fixture: Hugging Face diffusers models with random weights, and their ComfyUI twins.

A twin is the diffusers state dict converted to ComfyUI's keys by ComfyUI's own
mappings (comfy.utils.unet_to_diffusers for the UNets; for MMDiT and FLUX
comfy.model_detection.convert_diffusers_mmdit, which is how ComfyUI loads a
diffusers-format model), so a LoRA exported from the twin's weights names
ComfyUI's modules, and diffusers can be asked to load it into its own.

Sizes are the tests' tiny UNet/MMDiT configs (the layout of
bench/comfy_models.py's "tiny" models, which `check_layout` confirms),
except FLUX: diffusers' kohya converter splits a single block's fused
`linear1` at FLUX.1's widths ([3072] * 3 + [12288]), so the FLUX twin has
FLUX.1's width and one double and one single block (≈ 0.5 B weights, 2 GB).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import comfy_models
import torch

from comfyui_location import skip_or_fail


def require_diffusers():
    """diffusers and peft (its LoRA backend), or a skip (a failure under CI, which installs the `interop` extra)."""
    try:
        import diffusers  # noqa: F401
        import peft  # noqa: F401
    except ImportError as e:
        skip_or_fail(f"diffusers/peft are not installed ({e.name}); pip install -e '.[interop]' to run the "
                     "diffusers loading tests")


_UNET = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
             down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
             cross_attention_dim=32, attention_head_dim=2, use_linear_projection=True)
DIFFUSERS_CONFIGS = {  # the same layout as comfy_models' "tiny" sd15/sdxl/sd3; FLUX at FLUX.1's width
    "sd15": ("UNet2DConditionModel", _UNET),
    "sdxl": ("UNet2DConditionModel", dict(_UNET, addition_embed_type="text_time", addition_time_embed_dim=256,
                                          projection_class_embeddings_input_dim=1568)),
    "sd3": ("SD3Transformer2DModel", dict(sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                          attention_head_dim=64, num_attention_heads=2, joint_attention_dim=32,
                                          caption_projection_dim=128, pooled_projection_dim=32, pos_embed_max_size=32)),
    "flux": ("FluxTransformer2DModel", dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                            attention_head_dim=128, num_attention_heads=24, joint_attention_dim=32,
                                            pooled_projection_dim=32, guidance_embeds=True)),
}
PIPELINES = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
             "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}
# The ComfyUI model each twin must equal, key for key and shape for shape (comfy_models' config, with changes).
COMFY_LAYOUT = {"sd15": ("tiny", {}), "sdxl": ("tiny", {}), "sd3": ("tiny", {}),
                "flux": ("full", dict(depth=1, depth_single_blocks=1, vec_in_dim=32, context_in_dim=32))}


@dataclass
class Twin:
    """A diffusers model and its ComfyUI twin (ComfyUI keys without `diffusion_model.`).

    `key_map` is ComfyUI's own map: diffusers key → ComfyUI key, or
    (ComfyUI key, (dim, offset, size)) for a slice of a fused weight, or
    (ComfyUI key, None, transform). Non-fused tensors are shared by the
    two; `restore` undoes what loading a LoRA into the diffusers model did.
    """

    arch: str
    model: torch.nn.Module
    comfy: dict[str, torch.Tensor]
    key_map: dict
    _originals: dict[str, torch.Tensor] = field(default_factory=dict)

    def comfy_part(self, comfy_weights: dict[str, torch.Tensor], diffusers_key: str) -> torch.Tensor | None:
        """The part of `comfy_weights` (ComfyUI layout) that is `diffusers_key`; None if not a plain or sliced copy."""
        target = self.key_map.get(diffusers_key)
        if target is None:
            return None
        if isinstance(target, str):
            return comfy_weights[target]
        if target[1] is None:  # a transformed copy (scale/shift swapped): not a LoRA target
            return None
        return comfy_weights[target[0]].narrow(*target[1])

    def diffusers_keys_of(self, comfy_keys) -> list[str]:
        """The diffusers weights that hold (parts of) these ComfyUI weight keys."""
        comfy_keys = set(comfy_keys)
        out = []
        for dk, target in self.key_map.items():
            ck = target if isinstance(target, str) else target[0]
            if ck in comfy_keys and dk.endswith(".weight") and (isinstance(target, str) or target[1] is not None):
                out.append(dk)
        return out

    def keep_originals(self, diffusers_keys) -> None:
        state = self.model.state_dict()
        for k in diffusers_keys:
            self._originals.setdefault(k, state[k].detach().clone())

    def restore(self) -> None:
        """Take out any LoRA layers and put the kept original weights back."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if any(isinstance(m, BaseTunerLayer) for m in self.model.modules()):
            self.model.unload_lora()
        state = self.model.state_dict()
        with torch.no_grad():
            for k, v in self._originals.items():
                state[k].copy_(v)


def _random_(model: torch.nn.Module, seed: int) -> None:
    """Fill every parameter and float buffer: matrices N(0, 1/fan_in), vectors N(0, 0.1²) (comfy_models' rule)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.normal_(0.0, t[0].numel() ** -0.5 if t.ndim >= 2 else 0.1, generator=g)


def build(arch: str, seed: int = 0) -> Twin:
    import comfy.model_detection
    import comfy.utils
    import diffusers

    class_name, config = DIFFUSERS_CONFIGS[arch]
    with torch.device("meta"):  # no default init: FLUX.1's width takes seconds to initialise twice
        model = getattr(diffusers, class_name)(**config)
    model = model.to_empty(device="cpu").eval()
    _random_(model, seed)
    state = dict(model.state_dict())
    if arch in ("sd15", "sdxl"):
        key_map = comfy.utils.unet_to_diffusers(comfy_models.model_config(arch, "tiny").unet_config)
        converted = {key_map[k]: v for k, v in state.items() if k in key_map}  # as comfy.sd loads a diffusers UNet
    else:
        converted = comfy.model_detection.convert_diffusers_mmdit(dict(state), "")
        if arch == "flux":
            key_map = comfy.utils.flux_to_diffusers({"depth": config["num_layers"], "hidden_size": model.inner_dim,
                                                     "depth_single_blocks": config["num_single_layers"]})
        else:
            key_map = comfy.utils.mmdit_to_diffusers({"depth": config["num_layers"], "num_blocks": config["num_layers"]})
    unmapped = sorted(set(state) - set(key_map))
    assert not unmapped, f"ComfyUI's map leaves diffusers keys unconverted: {unmapped[:5]}"
    # The map also names keys of other formats that load into the same ComfyUI weights (from 0.33 FLUX's has
    # LyCORIS' `ff.linear_in` and FLUX.2's fused names): only this model's own keys are the twin's.
    key_map = {k: v for k, v in key_map.items() if k in state}
    return Twin(arch, model, converted, key_map)


def check_layout(twin: Twin) -> None:
    """The twin has exactly the keys and shapes of the ComfyUI model comfy_models builds (a meta model: no memory)."""
    size, changes = COMFY_LAYOUT[twin.arch]
    config = comfy_models.model_config(twin.arch, size, **changes)
    with torch.device("meta"):
        layout = config.get_model({}, device=torch.device("meta")).diffusion_model.state_dict()
    want = {k: tuple(v.shape) for k, v in layout.items()}
    got = {k: tuple(v.shape) for k, v in twin.comfy.items()}
    assert got == want, (f"twin ≠ ComfyUI {twin.arch}: only in twin {sorted(set(got) - set(want))[:5]}, "
                         f"only in ComfyUI {sorted(set(want) - set(got))[:5]}, "
                         f"shapes differ {[k for k in got.keys() & want.keys() if got[k] != want[k]][:5]}")


def pipeline(twin: Twin):
    """The arch's diffusers pipeline holding only the twin's model (no text encoders, VAE or scheduler):
    enough for its `load_lora_weights` / `fuse_lora`, the path users take."""
    import diffusers

    cls = getattr(diffusers, PIPELINES[twin.arch])
    params = inspect.signature(cls.__init__).parameters
    kwargs = {name: None for name, p in params.items() if name != "self" and p.default is inspect.Parameter.empty}
    kwargs["unet" if "unet" in params else "transformer"] = twin.model
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    return cls(**kwargs)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())


@contextmanager
def diffusers_log():
    """Every warning diffusers and peft log or raise while loading: unexpected or ignored keys
    show here."""
    handler = _Collect()
    loggers = [logging.getLogger(n) for n in ("diffusers", "peft")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.records
        handler.records += [str(w.message) for w in caught]
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


def lora_modules(model: torch.nn.Module) -> set[str]:
    """Names of the modules peft injected a LoRA layer into."""
    from peft.tuners.lora import LoraLayer

    return {name for name, m in model.named_modules() if isinstance(m, LoraLayer)}
