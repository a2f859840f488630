"""ΔR adapters and their self-contained files.

A ΔR file holds, per target, the basis Q it was trained in and ΔR itself:
the top-r subspace of real weights is ill-conditioned, so two machines can
compute different Q for the same model, and a ΔR means nothing without its Q.
The update a file describes is `W + Q·ΔR` on each target's rows.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BasisMismatchError, DeltaFileError, SettingError
from ..files import atomic_save, load_tensors
from ..targets import TargetSet

DELTA_FORMAT = "qr-lora-delta/1"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
MODES = ("delta_r", "qr")  # ΔR only (disentangled, the default), or Q and R trained directly
# Where a triangular ΔR's mask applied: "official" (the official code's basis Q·O, this version) or "paper"
# (the mask in Q itself, files of earlier versions). A file's ΔR always lives in its Q.
TRIANGULAR_BASIS = "official"


def _mode_of(meta: dict[str, str]) -> str:
    return meta.get("mode", "delta_r")  # files written before Q-and-R mode existed are ΔR only


def _triangular_basis_of(meta: dict[str, str]) -> str:
    """A file's triangular basis; triangular files of earlier versions, which do not say, masked in Q ("paper")."""
    return meta.get("triangular_basis") or ("paper" if meta.get("triangular") == "true" else "")


def describe_delta_header(header: dict, meta: dict[str, str]) -> dict:
    """A ΔR file's summary from its safetensors header alone: no tensor is read (the Load ΔR picker, `qr-lora info`)."""
    def parsed(key: str) -> dict:
        try:
            value = json.loads(meta.get(key) or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    targets = parsed("targets")
    rank = str(meta.get("rank", ""))
    return {"arch": meta.get("arch"), "rank": int(rank) if rank.isdigit() else None,
            "mode": _mode_of(meta), "triangular": meta.get("triangular") == "true",
            "triangular_basis": _triangular_basis_of(meta),
            "targets": len(targets.get("targets", [])), "preset": targets.get("preset"),
            "parameters": sum(math.prod(e.get("shape", ())) for k, e in header.items() if k.startswith("delta_r.")),
            "trigger_words": meta.get("trigger_words", ""), "training": parsed("training"),
            "created": meta.get("created"), "basis_fingerprint": meta.get("basis_fingerprint"),
            "base_model_fingerprint": meta.get("base_model_fingerprint"), "dtype": meta.get("dtype")}


@dataclass
class QRDelta:
    """Per-target Q [rows, k] and ΔR [k, in] (k = rank; 2·rank in "qr" mode, which stores [Q'|Q₀] and [R'; −R₀])."""

    targets: TargetSet
    rank: int
    q: dict[str, torch.Tensor]
    delta: dict[str, torch.Tensor]
    basis_fingerprint: str
    base_fingerprint: str = ""
    mode: str = "delta_r"
    triangular: bool = False
    trigger_words: str = ""
    training: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    name: str = ""
    triangular_basis: str = ""  # for a triangular ΔR: the basis its mask applied in (see TRIANGULAR_BASIS)

    @property
    def arch(self) -> str:
        return self.targets.arch

    def num_params(self) -> int:
        return sum(d.numel() for d in self.delta.values())

    def metadata(self) -> dict[str, str]:
        return {
            "qr_lora_format": DELTA_FORMAT,
            "arch": self.arch,
            "rank": str(self.rank),
            "mode": self.mode,
            "triangular": str(self.triangular).lower(),
            "triangular_basis": self.triangular_basis,
            "targets": json.dumps(self.targets.to_json()),
            "basis_fingerprint": self.basis_fingerprint,
            "base_model_fingerprint": self.base_fingerprint,
            "trigger_words": self.trigger_words,
            "training": json.dumps(self.training),
            "created": self.created,
        }

    def save(self, path: str | Path, dtype: str = "bf16") -> Path:
        if dtype not in DTYPES:
            raise SettingError(f"storage dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        tensors = {}
        for n in self.targets.names():
            tensors[f"q.{n}"] = self.q[n].to(DTYPES[dtype])
            tensors[f"delta_r.{n}"] = self.delta[n].to(DTYPES[dtype])
        meta = self.metadata()
        meta["dtype"] = dtype
        return atomic_save(tensors, path, meta)

    @staticmethod
    def load(path: str | Path, expect_arch: str | None = None, expect_rank: int | None = None) -> "QRDelta":
        """Read and validate a ΔR file; tensors come back in fp32."""
        path = Path(path)
        tensors, meta = load_tensors(path)
        fmt = meta.get("qr_lora_format")
        if fmt != DELTA_FORMAT:
            hint = " It is a QR-LoRA basis cache file, not a ΔR." if fmt and "basis" in fmt else (
                " It looks like an ordinary LoRA: load it with ComfyUI's LoRA loader." if any(
                    k.endswith("lora_down.weight") for k in tensors) else "")
            raise DeltaFileError(f"{path.name}: not a QR-LoRA ΔR file (format {fmt!r}).{hint}")
        try:
            targets = TargetSet.from_json(json.loads(meta["targets"]))
            rank = int(meta["rank"])
            q = {n: tensors[f"q.{n}"].float() for n in targets.names()}
            delta = {n: tensors[f"delta_r.{n}"].float() for n in targets.names()}
            d = QRDelta(targets, rank, q, delta, meta["basis_fingerprint"], meta.get("base_model_fingerprint", ""),
                        _mode_of(meta), meta.get("triangular") == "true", meta.get("trigger_words", ""),
                        json.loads(meta.get("training") or "{}"), meta.get("created", ""), path.stem,
                        _triangular_basis_of(meta))
        except (KeyError, ValueError, TypeError) as e:
            raise DeltaFileError(f"{path.name}: ΔR file is incomplete or damaged ({type(e).__name__}: {e}).") from None
        d.validate(str(path.name))
        if expect_arch and d.arch != expect_arch:
            raise BasisMismatchError(
                f"{path.name} is a ΔR for {d.arch.upper()}, but the model is {expect_arch.upper()}: "
                f"load it with a {d.arch.upper()} model, or train a new ΔR for this one.")
        if expect_rank and d.rank != expect_rank:
            raise BasisMismatchError(
                f"{path.name} has rank {d.rank}, but the basis in use has rank {expect_rank}: "
                f"decompose with rank {d.rank} or retrain at rank {expect_rank}.")
        return d

    def validate(self, what: str = "ΔR") -> None:
        if self.mode not in MODES:
            raise DeltaFileError(f"{what}: unknown training mode {self.mode!r}.")
        k = self.rank * (2 if self.mode == "qr" else 1)
        for t in self.targets:
            rows, cols = self.targets.shape(t)
            q, d = self.q[t.name], self.delta[t.name]
            if tuple(q.shape) != (rows, k) or tuple(d.shape) != (k, cols):
                raise DeltaFileError(
                    f"{what}: target {t.name} has Q {list(q.shape)} and ΔR {list(d.shape)}, "
                    f"expected [{rows}, {k}] and [{k}, {cols}]: the file is damaged.")
            if not (torch.isfinite(q).all() and torch.isfinite(d).all()):
                raise DeltaFileError(f"{what}: target {t.name} holds NaN or infinite values; the file is unusable.")

    def check_model(self, shapes: dict[str, tuple[int, ...]], arch: str | None) -> None:
        """Refuse to apply to a model whose architecture or target shapes differ."""
        self.targets.check_model(shapes, arch, self.name or "this ΔR", "trained",
                                 f"use a {self.arch.upper()} model of the size it was trained on")


def random_delta(basis, seed: int, scale: float = 0.05, name: str = "") -> QRDelta:
    """A ΔR in `basis` with N(0, scale²) entries: what training produces, without the wait (tests, benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    delta = {t.name: torch.randn(basis.rank, basis.targets.shapes[t.key][1], generator=g) * scale
             for t in basis.targets}
    return QRDelta(basis.targets, basis.rank, dict(basis.q), delta, basis.fingerprint, basis.weights_fingerprint,
                   name=name)
