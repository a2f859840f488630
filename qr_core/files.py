"""Safetensors reading and writing that never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import DeltaFileError

# A safetensors file starts with an 8-byte little-endian header length and a
# JSON header; anything larger than this is not a header but garbage.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def atomic_save(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str]) -> Path:
    """Write a safetensors file to a temporary name beside `path`, then rename it.

    Readers (and concurrent writers of the same entry) only ever see a complete
    file: `os.replace` is atomic on one file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, tmp, metadata=dict(metadata))
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt / a user's cancel: the target keeps its old content.
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def copy_new(source: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Copy `source` to `target` unless something is there already; True when it copied.

    Never replaces a file, even one that appears between a check and the write: the target is created
    exclusively (O_EXCL). A copy that fails half-way removes the file it created, so no stub stays behind.
    """
    target = Path(target)
    try:
        out = open(target, "xb")
    except FileExistsError:
        return False
    try:
        with out, open(source, "rb") as src:
            shutil.copyfileobj(src, out)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return True


def read_header(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """Return (tensor entries, metadata) of a safetensors file, checking that it is whole."""
    path = Path(path)
    if not path.is_file():
        raise DeltaFileError(f"{path}: no such file. Check the name, or pick an existing file.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DeltaFileError(f"{path}: file is empty or truncated ({size} bytes); it is not a safetensors file.")
        (n,) = struct.unpack("<Q", head)
        if n > min(_MAX_HEADER_BYTES, size - 8):
            raise DeltaFileError(
                f"{path}: not a safetensors file (bad header length). "
                "Only .safetensors files are read; pickled .pt/.ckpt files are refused on purpose."
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DeltaFileError(f"{path}: not a safetensors file (unreadable header: {e}).") from None
    metadata = header.pop("__metadata__", None) or {}
    end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    if 8 + n + end > size:
        raise DeltaFileError(
            f"{path}: file is truncated ({size} bytes, header says {8 + n + end}). "
            "It was probably cut off while copying: copy or create it again."
        )
    return header, metadata


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load every tensor of a checked safetensors file."""
    _, metadata = read_header(path)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types
        raise DeltaFileError(f"{path}: could not be read as safetensors ({e}).") from None
    return tensors, metadata


def free_name(path: str | os.PathLike, in_use: Callable[[Path], bool] = Path.exists) -> Path:
    """`path` when it is not in use, else the next numbered name, as ComfyUI's Save Image numbers its files.

    `name.safetensors` is taken → `name_00001_.safetensors`, one above the highest number any file of that
    name already carries (a run's snapshots and state included), so a file the user deleted is never reused
    and the numbers keep the order in which the files were made.
    """
    path = Path(path)
    if not in_use(path):
        return path
    suffix = "".join(path.suffixes[-1:])
    stem = path.name[: -len(suffix)] if suffix else path.name
    numbered = re.compile(re.escape(stem) + r"_(\d{5,})_")
    found = (numbered.match(p.name) for p in path.parent.iterdir()) if path.parent.is_dir() else ()
    highest = max((int(m.group(1)) for m in found if m), default=0)
    return path.with_name(f"{stem}_{highest + 1:05d}_{suffix}")
