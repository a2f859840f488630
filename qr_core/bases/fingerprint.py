"""Cheap content fingerprints of weights and bases.

Hashing every byte of a FLUX model (≈11 GB for the paper's targets) costs
seconds on a GPU host's CPU, which is more than the fast decomposition itself.
A weights fingerprint therefore hashes names, shapes and dtypes plus a fixed
sample of each tensor: 4096 evenly strided elements and 4096 at fixed
pseudo-random positions. The trade-off: an edit that touches none of the
sampled elements keeps the fingerprint. A cache hit is checked once more
before use: every Q must be orthonormal, and the captured energy ‖QᵀW‖² of a
sample of targets (every shape among them) must match the live weights
(`decompose.check_basis`). `mode="full"` hashes every byte.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable

import torch

from ..errors import SettingError

SAMPLES = 4096


def _sample_index(numel: int, device) -> torch.Tensor:
    if numel == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    strided = torch.linspace(0, numel - 1, min(SAMPLES, numel), dtype=torch.float64).long()
    g = torch.Generator().manual_seed(numel)
    scattered = torch.randint(0, numel, (min(SAMPLES, numel),), generator=g)
    return torch.cat([strided, scattered]).to(device)


def _bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous().cpu()
    if t.dtype.is_floating_point and t.element_size() == 1:  # fp8: numpy has no such dtype
        t = t.view(torch.uint8)
    elif t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def fingerprint_weights(get_weight: Callable[[str], torch.Tensor], keys: Iterable[str], mode: str = "sampled") -> str:
    """Hex fingerprint of the weights under `keys` (order-independent)."""
    if mode not in ("sampled", "full"):
        raise SettingError(f"fingerprint mode must be 'sampled' or 'full', not {mode!r}")
    h = hashlib.blake2b(digest_size=16)
    h.update(mode.encode())
    for key in sorted(set(keys)):
        w = get_weight(key)
        h.update(f"{key}|{tuple(w.shape)}|{w.dtype}\n".encode())
        flat = w.detach().reshape(-1)
        h.update(_bytes(flat if mode == "full" else flat[_sample_index(flat.numel(), flat.device)]))
    return h.hexdigest()


def fingerprint_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """Hex hash of every byte of the given tensors (as fp32) and their names: a basis's identity."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        h.update(name.encode() + b"\n")
        h.update(_bytes(tensors[name].float()))
    return h.hexdigest()
