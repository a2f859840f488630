"""Start-up of the real ComfyUI runtime for these tests (shared by conftest and the test modules).

ComfyUI (found by comfyui_location: $COMFYUI_PATH or the ComfyUI the pack
sits in) goes first on sys.path (its top-level `nodes` module must win over
this pack's `nodes/` folder), is forced onto the CPU, and is pointed at a
temporary models/custom_nodes/output tree with the pack linked in as a user
installs it. Without ComfyUI, AVAILABLE is False and nothing is imported.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from comfyui_location import COMFYUI, PACK_DIR, VERSION, version_tuple  # noqa: F401

AVAILABLE = COMFYUI is not None
COMFYUI_PATH = str(COMFYUI) if AVAILABLE else ""
COMFYUI_VERSION = version_tuple(VERSION) if AVAILABLE else ()

if AVAILABLE:
    sys.path.insert(0, COMFYUI_PATH)
    from comfy.cli_args import args  # noqa: E402

    args.cpu = True  # the --cpu flag, set before comfy.model_management is imported
    args.disable_all_custom_nodes = False

    import folder_paths  # noqa: E402
    import torch  # noqa: E402

    # Tiny models: one thread is faster than two, and far faster when the
    # cores are shared (spinning OpenMP workers then stall every small op).
    torch.set_num_threads(1)

    ROOT = Path(tempfile.mkdtemp(prefix="qr-lora-comfyui-"))
    for sub in ("models/qr_lora", "models/loras", "custom_nodes", "output", "temp", "input"):
        (ROOT / sub).mkdir(parents=True, exist_ok=True)
    folder_paths.models_dir = str(ROOT / "models")
    folder_paths.folder_names_and_paths["qr_lora"] = ([str(ROOT / "models/qr_lora")], {".safetensors"})
    folder_paths.folder_names_and_paths["loras"] = ([str(ROOT / "models/loras")], folder_paths.supported_pt_extensions)
    folder_paths.folder_names_and_paths["custom_nodes"] = ([str(ROOT / "custom_nodes")], set())
    folder_paths.set_output_directory(str(ROOT / "output"))
    folder_paths.set_temp_directory(str(ROOT / "temp"))
    folder_paths.set_input_directory(str(ROOT / "input"))
    # The pack as a user installs it: a folder inside custom_nodes.
    (ROOT / "custom_nodes" / "qr-lora").symlink_to(PACK_DIR, target_is_directory=True)
