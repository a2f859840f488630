"""ComfyUI's model folders for the pack: models/qr_lora (ΔR files, the basis cache in bases/) and models/loras."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import folder_paths

from ...qr_core.files import free_name
from ...qr_core.training.snapshots import grouped

FOLDER = "qr_lora"
BASES_SUBFOLDER = "bases"
EXTENSIONS = {".safetensors"}


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
    """ΔR files for the Load ΔR picker: each run's snapshots follow its final file (training states and the
    basis cache, in its subfolder, are not offered)."""
    names = folder_paths.get_filename_list(FOLDER)
    return grouped([n for n in names if not n.replace("\\", "/").startswith(BASES_SUBFOLDER + "/")])


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


# The tooltip of every save-name input's `overwrite` switch.
OVERWRITE_HELP = ("Off (the default): a file of that name that this run did not make is kept, and the new one is "
                  "saved under the next free numbered name, name_00001_.safetensors…, as Save Image numbers its "
                  "images. On: replace it.")


def save_path(folder_name: str, name: str, overwrite: bool,
              in_use: Callable[[Path], bool] = Path.exists) -> tuple[Path, str]:
    """The file to write for a save name, and a note when it is not the name itself.

    Without `overwrite` a name `in_use` (by default: any existing file) is never replaced: the file gets the
    next numbered name instead (see qr_core.files.free_name).
    """
    wanted = output_path(folder_name, name)
    path = wanted if overwrite else free_name(wanted, in_use)
    if path != wanted:
        return path, f"{wanted.name} exists and is kept (overwrite is off): saved as {path.name}"
    return path, ""


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
