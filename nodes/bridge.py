"""Where qr_core meets ComfyUI: model folders, base weights, shapes and patches.

Everything here is ComfyUI-specific glue; the math lives in qr_core.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch

import comfy.model_patcher
import comfy.weight_adapter
import folder_paths

from ..qr_core import PatchTerm, QRDelta, detect_architecture

FOLDER = "qr_lora"
BASES_SUBFOLDER = "bases"
EXTENSIONS = {".safetensors"}
DIFFUSION_PREFIX = "diffusion_model."


def register_folders() -> None:
    """Register models/qr_lora with an explicit extension set.

    `add_model_folder_path` would register an empty set, which matches every
    file; a path configured earlier (extra_model_paths.yaml, tests) is kept.
    """
    entry = folder_paths.folder_names_and_paths.get(FOLDER)
    if entry is None:
        default = os.path.join(folder_paths.models_dir, FOLDER)
        folder_paths.folder_names_and_paths[FOLDER] = ([default], set(EXTENSIONS))
    elif not entry[1]:
        folder_paths.folder_names_and_paths[FOLDER] = (entry[0], set(EXTENSIONS))


def delta_folder() -> Path:
    return Path(folder_paths.get_folder_paths(FOLDER)[0])


def basis_cache_dir() -> Path:
    return delta_folder() / BASES_SUBFOLDER


def delta_file_names() -> list[str]:
    """ΔR files for the Load ΔR picker; the basis cache lives in a subfolder and is not offered."""
    names = folder_paths.get_filename_list(FOLDER)
    return [n for n in names if not n.replace("\\", "/").startswith(BASES_SUBFOLDER + "/")]


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(root)
        return True
    except ValueError:
        return False


def output_path(folder_name: str, name: str) -> Path:
    """The file a save name denotes inside a model folder; refuses names that leave the folder."""
    clean = name.strip()
    if not clean:
        raise ValueError("the save name is empty: type a file name such as 'my_style'.")
    if not clean.lower().endswith(".safetensors"):
        clean += ".safetensors"
    root = Path(folder_paths.get_folder_paths(folder_name)[0]).resolve()
    path = (root / clean).resolve()
    if os.path.isabs(clean) or not _inside(root, path) or path == root:
        raise ValueError(f"the name {name!r} points outside models/{folder_name}: "
                         "use a plain file name (subfolders inside it are fine).")
    return path


def input_path(folder_name: str, name: str) -> Path:
    """An existing file inside a model folder; refuses names that resolve outside every registered path."""
    for root in folder_paths.get_folder_paths(folder_name):
        root = Path(root).resolve()
        path = (root / name).resolve()
        if not _inside(root, path):
            raise ValueError(f"the file name {name!r} points outside models/{folder_name}: "
                             "pick a file from the list.")
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name!r} is not in models/{folder_name}: pick a file from the list "
                            "(refresh the page after copying new files).")


def model_shapes(model) -> dict[str, tuple[int, ...]]:
    """Diffusion-model state-dict keys (without the prefix) to shapes."""
    return {k: tuple(v.shape) for k, v in model.model.diffusion_model.state_dict().items()}


def model_arch(model) -> str | None:
    return detect_architecture(model_shapes(model).keys())


def base_weight_getter(model) -> Callable[[str], torch.Tensor]:
    """get_weight(key) for qr_core: the weight as loaded, before any patch.

    Patched weights are read from the patcher's backups (what unpatching
    restores). A weight is returned as stored (fp8 included: qr_core casts the
    rows it uses, and fingerprints sample it without a full copy); scaled-fp8
    layers go through their own `convert_weight`, the conversion ComfyUI
    applies before patching, and come back in fp32.
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


def check_deltas_fit(deltas: Iterable[QRDelta], model) -> None:
    """Refuse ΔR for another architecture or model size (the model's shapes are read once)."""
    shapes = model_shapes(model)
    arch = detect_architecture(shapes.keys())
    for delta in deltas:
        delta.check_model(shapes, arch)


def lora_patches(terms: Iterable[PatchTerm]) -> dict:
    """add_patches entries: one stock LoRA adapter per target, row slices as (key, (0, offset, size)).

    alpha = rank makes the scale 1, so the patch adds exactly up @ down.
    """
    patches = {}
    for t in terms:
        key = DIFFUSION_PREFIX + t.target.key
        if t.target.is_slice:
            key = (key, (0, t.target.offset, t.target.size))
        weights = (t.up.float(), t.down.float(), float(t.rank), None, None, None)
        patches[key] = comfy.weight_adapter.LoRAAdapter(set(), weights)
    return patches


def apply_terms(model, terms: list[PatchTerm]):
    """A clone of `model` with the terms added as patches (the original stays untouched)."""
    patched = model.clone()
    patches = lora_patches(terms)
    applied = patched.add_patches(patches, 1.0)
    if len(applied) != len(patches):
        missing = sorted({k if isinstance(k, str) else k[0] for k in patches} -
                         {k if isinstance(k, str) else k[0] for k in applied})
        raise ValueError(f"the model has no weight {missing[0]} (and {len(missing) - 1} more): "
                         "this ΔR belongs to another model.")
    return patched


def release_inference_tensors(module: torch.nn.Module) -> int:
    """Replace inference-mode parameters and buffers by ordinary copies with the same values.

    ComfyUI loads models inside torch.inference_mode(); autograd can neither
    save such tensors for backward nor index them, even when they need no
    gradient. Swapping `.data` is not enough (the tensor object keeps no
    version counter), so the module entries themselves are replaced, one
    tensor at a time; the copies are bit-identical. Returns the count.
    Tensor subclasses (ComfyUI ≥ 0.8's QuantizedTensor) stay: the forward
    dequantizes them into fresh tensors, and a copy made outside inference
    mode would keep inference-mode data inside a wrapper that no longer says so.
    """
    count = 0
    with torch.inference_mode(False), torch.no_grad():
        for mod in module.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and p.is_inference() and type(p) is torch.nn.Parameter:
                    mod._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=p.requires_grad)
                    count += 1
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_inference():
                    mod._buffers[name] = b.clone()
                    count += 1
    return count


def show_progress_text(text: str, node_id: str | None) -> None:
    """A line of text on the running node (the frontend shows it under the progress bar); no-op without a server."""
    if node_id is None:
        return
    try:
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is not None:
        instance.send_progress_text(text, node_id)


def check_basis_fits(basis, model) -> None:
    """Refuse a basis decomposed from another model (architecture or target shapes differ)."""
    shapes = model_shapes(model)
    arch = detect_architecture(shapes.keys())
    if arch and basis.arch != arch:
        raise ValueError(f"this QR_BASIS was decomposed from a {basis.arch.upper()} model, but the model is "
                         f"{arch.upper()}: run QR-LoRA Decompose on this model.")
    for key, shape in basis.targets.shapes.items():
        if tuple(shapes.get(key, ())[:2]) != tuple(shape):
            raise ValueError(f"this QR_BASIS targets {key} {list(shape)}, which this model does not have: "
                             "run QR-LoRA Decompose on this model.")
