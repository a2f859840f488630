"""ComfyUI used as a library, for `qr-lora train`: find it, start it headless, load this pack with its loader.

qr_core never imports ComfyUI, so its command line loads this file by path
(it is no package member then: no relative imports here). `start` puts
ComfyUI first on sys.path (its top-level `nodes` module must win over this
pack's `nodes/` folder), picks the device before ComfyUI's model management
reads it (a torchrun/accelerate process takes the GPU of its LOCAL_RANK),
applies ComfyUI's extra_model_paths.yaml as main.py does, and imports the
pack through ComfyUI's own custom-node loader, as a server would.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


def _is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_patcher.py").is_file() and (path / "main.py").is_file()


def find_comfyui(pack_dir: Path, given: str | None) -> Path:
    """--comfyui, else $COMFYUI_PATH, else the ComfyUI this pack is installed in."""
    for how, candidate in (("--comfyui", given), ("COMFYUI_PATH", os.environ.get("COMFYUI_PATH"))):
        if candidate:
            path = Path(candidate).expanduser().resolve()
            if not _is_comfyui(path):
                raise SystemExit(f"error: {how}={candidate} is not a ComfyUI folder (no comfy/model_patcher.py "
                                 "and main.py): point it at the folder that holds ComfyUI's main.py.")
            return path
    host = pack_dir.parent.parent
    if pack_dir.parent.name == "custom_nodes" and _is_comfyui(host):
        return host
    raise SystemExit("error: qr-lora train loads models through ComfyUI: set COMFYUI_PATH (or --comfyui) to your "
                     "ComfyUI folder, or run the pack from ComfyUI/custom_nodes.")


def start(pack_dir: Path, comfyui: str | None = None, cpu: bool = False, models_dir: str | None = None):
    """ComfyUI's runtime with the pack loaded; returns the pack's package module."""
    root = find_comfyui(pack_dir, comfyui)
    sys.path.insert(0, str(root))
    import torch

    if not cpu and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # ComfyUI's device is the current one
    from comfy.cli_args import args

    args.cpu = cpu
    import folder_paths

    if models_dir:
        folder = Path(models_dir).expanduser().resolve()
        folder_paths.models_dir = str(folder)
        folder_paths.folder_names_and_paths["qr_lora"] = ([str(folder / "qr_lora")], {".safetensors"})
        (folder / "qr_lora").mkdir(parents=True, exist_ok=True)
    elif (root / "extra_model_paths.yaml").is_file():
        try:
            from utils.extra_config import load_extra_path_config
        except ImportError:  # older ComfyUI: main.py's own function only
            load_extra_path_config = None
        if load_extra_path_config is not None:
            load_extra_path_config(str(root / "extra_model_paths.yaml"))
    import nodes

    if not asyncio.run(nodes.load_custom_node(str(pack_dir))):
        raise SystemExit(f"error: ComfyUI could not import the pack at {pack_dir} (see the log above).")
    return sys.modules[str(pack_dir).replace(".", "_x_")]
