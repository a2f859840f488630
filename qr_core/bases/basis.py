"""A decomposed model: per-target Q and σ, their provenance, and their file form."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .decompose import DecomposeSettings
from ..errors import DeltaFileError
from ..files import atomic_save, load_tensors
from ..targets import TargetSet

BASIS_FORMAT = "qr-lora-basis/1"


@dataclass
class Basis:
    """Orthonormal bases Q [rows, r] (fp32) and top-r singular values σ for every target of a model."""

    targets: TargetSet
    settings: DecomposeSettings
    q: dict[str, torch.Tensor]
    sigma: dict[str, torch.Tensor]
    weights_fingerprint: str  # of the base weights it was computed from
    fingerprint: str  # of Q itself: ΔR trained in this basis carry it
    seconds: float = 0.0  # decomposition time when computed
    cache_status: str = "off"  # "hit", "miss", "recomputed (…)", "off" (shown as "cache …")
    path: Path | None = field(default=None, compare=False)

    @property
    def rank(self) -> int:
        return self.settings.rank

    @property
    def arch(self) -> str:
        return self.targets.arch

    def check_model(self, shapes: dict[str, tuple[int, ...]], arch: str | None) -> None:
        """Refuse a model this basis was not decomposed from (architecture or target shapes differ)."""
        self.targets.check_model(shapes, arch, "this QR_BASIS", "decomposed", "run QR-LoRA Decompose on this model")

    def summary(self) -> str:
        return (f"{self.targets.describe()}, rank {self.rank}, {self.settings.method} "
                f"({self.cache_status}, {self.seconds:.2f} s)")

    def metadata(self, extra: dict | None = None) -> dict[str, str]:
        meta = {
            "qr_lora_format": BASIS_FORMAT,
            "targets": json.dumps(self.targets.to_json()),
            "settings": json.dumps(self.settings.to_json()),
            "weights_fingerprint": self.weights_fingerprint,
            "basis_fingerprint": self.fingerprint,
            "seconds": f"{self.seconds:.4f}",
        }
        meta.update(extra or {})
        return meta

    def save(self, path: str | Path, extra_metadata: dict | None = None) -> Path:
        tensors = {}
        for name in self.targets.names():
            tensors[f"q.{name}"] = self.q[name]
            tensors[f"sigma.{name}"] = self.sigma[name]
        return atomic_save(tensors, path, self.metadata(extra_metadata))

    @staticmethod
    def load(path: str | Path) -> "Basis":
        """Read a basis file; structure is checked here, fit to live weights by `decompose.check_basis`."""
        tensors, meta = load_tensors(path)
        if meta.get("qr_lora_format") != BASIS_FORMAT:
            raise DeltaFileError(f"{path}: not a QR-LoRA basis file (format {meta.get('qr_lora_format')!r}).")
        try:
            targets = TargetSet.from_json(json.loads(meta["targets"]))
            settings = DecomposeSettings.from_json(json.loads(meta["settings"]))
            q = {n: tensors[f"q.{n}"].float() for n in targets.names()}
            sigma = {n: tensors[f"sigma.{n}"].float() for n in targets.names()}
            return Basis(targets, settings, q, sigma, meta["weights_fingerprint"], meta["basis_fingerprint"],
                         float(meta.get("seconds", 0)), path=Path(path))
        except (KeyError, ValueError, TypeError) as e:
            raise DeltaFileError(f"{path}: basis file is incomplete or damaged ({type(e).__name__}: {e}).") from None
