"""The on-disk basis cache: the paper's 1–5 minute initialisation happens once per model.

An entry is keyed by the base weights' fingerprint, the decomposition settings
and the target set. Entries are written atomically, and every hit is checked
against the live weights before use (`decompose.check_basis`, on a sample of
targets); a damaged or stale entry is reported, recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .basis import BASIS_FORMAT, Basis
from .decompose import DecomposeSettings, WeightGetter, check_basis, decompose
from ..errors import QRLoRAError
from ..files import read_header
from .fingerprint import fingerprint_tensors, fingerprint_weights
from ..targets import TargetSet

log = logging.getLogger("qr_lora")

CACHE_ENV = "QR_LORA_CACHE"
# A cache hit re-reads this many target weights (every shape included) to check the stored energy;
# reading all of them cost most of a warm load (SDXL on a CPU: 2.7 of 3.1 s), and the sampled
# fingerprint in the key already covers every target.
ENERGY_CHECK_TARGETS = 24


def default_cache_dir() -> Path:
    """$QR_LORA_CACHE, else the per-user cache directory of this platform."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "qr-lora" / "bases"


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    arch: str
    preset: str
    targets: int
    settings: dict
    created: str


class BasisCache:
    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()

    @staticmethod
    def key(weights_fingerprint: str, targets: TargetSet, settings: DecomposeSettings) -> str:
        ident = {"format": BASIS_FORMAT, "weights": weights_fingerprint,
                 "settings": settings.to_json(), "targets": targets.to_json()}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def path_for(self, targets: TargetSet, settings: DecomposeSettings, key: str) -> Path:
        preset = targets.preset.replace("+", "-")
        return self.directory / f"{targets.arch}-{preset}-r{settings.rank}-{settings.method}-{key[:20]}.safetensors"

    def entries(self) -> list[CacheEntry]:
        out = []
        for p in sorted(self.directory.glob("*.safetensors")):
            try:
                _, meta = read_header(p)
                t = json.loads(meta["targets"])
                out.append(CacheEntry(p, p.stat().st_size, t["arch"], t["preset"], len(t["targets"]),
                                      json.loads(meta["settings"]), meta.get("created", "")))
            except (QRLoRAError, KeyError, ValueError):
                out.append(CacheEntry(p, p.stat().st_size, "?", "damaged", 0, {}, ""))
        return out

    def clear(self) -> int:
        """Delete every entry (and stray temporary files); return the bytes freed."""
        freed = 0
        for p in list(self.directory.glob("*.safetensors")) + list(self.directory.glob(".*.tmp")):
            freed += p.stat().st_size
            p.unlink(missing_ok=True)
        return freed


def get_basis(get_weight: WeightGetter, targets: TargetSet, settings: DecomposeSettings,
              cache: BasisCache | None = None, device: str | torch.device | None = None,
              progress: Callable[[int, int], None] | None = None, fingerprint_mode: str = "sampled") -> Basis:
    """The basis of these weights: from the cache when a valid entry exists, else computed (and cached)."""
    weights_fp = fingerprint_weights(get_weight, [t.key for t in targets], fingerprint_mode)
    path = None
    status = "off"  # reads "cache off" in Decompose's text
    if cache is not None:
        key = BasisCache.key(weights_fp, targets, settings)
        path = cache.path_for(targets, settings, key)
        status = "miss"
        if path.exists():
            t0 = time.perf_counter()
            basis, reason = _load_checked(path, key, get_weight, targets, settings, device)
            if reason is None:
                basis.cache_status, basis.seconds = "hit", time.perf_counter() - t0
                return basis
            log.warning("QR-LoRA basis cache entry %s is unusable (%s); recomputing it.", path, reason)
            status = f"recomputed ({reason})"

    t0 = time.perf_counter()
    q, sigma = decompose(get_weight, targets, settings, device=device, progress=progress)
    basis = Basis(targets, settings, q, sigma, weights_fp, fingerprint_tensors(q),
                  time.perf_counter() - t0, status, path)
    if path is not None:
        basis.save(path, {"cache_key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return basis


def _load_checked(path: Path, key: str, get_weight: WeightGetter, targets: TargetSet,
                  settings: DecomposeSettings, device) -> tuple[Basis | None, str | None]:
    """(basis, None) if the entry is whole and fits the live weights, else (None, why not)."""
    try:
        _, meta = read_header(path)
        basis = Basis.load(path)
    except QRLoRAError as e:
        return None, str(e)
    if meta.get("cache_key") != key or basis.targets.names() != targets.names():
        return None, "its key or target list does not match"
    problems = check_basis(get_weight, targets, basis.q, basis.sigma, settings.rank, device,
                           energy_sample=ENERGY_CHECK_TARGETS)
    if problems:
        return None, f"{len(problems)} targets do not fit the live weights, e.g. {problems[0]}"
    return basis, None

