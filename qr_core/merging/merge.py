"""Merging ΔR (paper eq. 7, N-way as in Fig. 9) into patch terms, and writing the result as a standard LoRA."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from ..adapters.delta import DTYPES, QRDelta
from ..errors import BasisMismatchError, SettingError
from ..files import atomic_save
from ..targets import Target, TargetSet


@dataclass
class PatchTerm:
    """The update `up @ down` on one target's rows: a LoRA with alpha = rank (scale 1)."""

    target: Target
    up: torch.Tensor  # [rows, k]
    down: torch.Tensor  # [k, in]

    @property
    def rank(self) -> int:
        return self.up.shape[1]

    def dense(self) -> torch.Tensor:
        return self.up @ self.down


def add_to_weights(weights: Mapping[str, torch.Tensor], updates: Iterable[tuple[Target, torch.Tensor]]
                   ) -> dict[str, torch.Tensor]:
    """A copy of `weights` with each dense update added to its target's rows (the reference W + ΔW).

    Weights that no update touches are shared, not copied.
    """
    out = dict(weights)
    copied = set()
    for target, update in updates:
        if target.key not in copied:
            out[target.key] = out[target.key].clone()
            copied.add(target.key)
        w = out[target.key]
        w[target.rows(w.shape[0])] += update.to(w.dtype)
    return out


def merge(deltas: Sequence[QRDelta], weights: Sequence[float], allow_mixed_bases: bool = False) -> list[PatchTerm]:
    """Σ λᵢ Q ΔRᵢ per target.

    ΔR trained in one basis are summed (one rank-r term per target). ΔR from
    different bases cannot be summed; with `allow_mixed_bases` each basis
    contributes its own term, stacked into one exact LoRA of rank r·(#bases).
    """
    if len(deltas) != len(weights):
        raise SettingError(f"{len(deltas)} ΔR but {len(weights)} weights: give one λ per ΔR.")
    if not deltas:
        raise SettingError("nothing to merge: give at least one ΔR.")
    archs = {d.arch for d in deltas}
    if len(archs) > 1:
        raise BasisMismatchError(f"these ΔR were trained on different architectures ({', '.join(sorted(archs))}); "
                                 "only ΔR of one model can be merged.")
    groups: dict[str, list[tuple[QRDelta, float]]] = defaultdict(list)
    for d, w in zip(deltas, weights):
        groups[d.basis_fingerprint].append((d, float(w)))
    if len(groups) > 1 and not allow_mixed_bases:
        names = ", ".join(d.name or f"#{i}" for i, d in enumerate(deltas))
        raise BasisMismatchError(
            f"ΔR {names} were trained in {len(groups)} different bases Q (other base weights or decomposition "
            "settings), so their ΔR cannot be added. Train them all from one QR_BASIS, or allow mixed bases "
            "to apply each basis's term separately.")
    targets: dict[str, Target] = {}
    up: dict[str, list[torch.Tensor]] = defaultdict(list)
    down: dict[str, list[torch.Tensor]] = defaultdict(list)
    for members in groups.values():
        summed: dict[str, torch.Tensor] = {}
        basis: dict[str, torch.Tensor] = {}
        for d, w in members:
            for t in d.targets:
                targets.setdefault(t.name, t)
                basis.setdefault(t.name, d.q[t.name])
                if t.name in summed:  # in place: fresh memory is most of a merge's cost on full-size models
                    summed[t.name].add_(d.delta[t.name].float(), alpha=w)
                else:
                    summed[t.name] = d.delta[t.name].float() * w
        for name, s in summed.items():
            up[name].append(basis[name].float())
            down[name].append(s)
    return [PatchTerm(targets[n], _joined(up[n], 1), _joined(down[n], 0)) for n in targets]


def _joined(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    # One basis (the usual case) needs no copy: on full-size SDXL the copies cost a quarter second per λ change.
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def union_shapes(deltas: Sequence[QRDelta]) -> dict[str, tuple[int, int]]:
    """(rows, cols) of every weight key any of the ΔR touch."""
    return {k: s for d in deltas for k, s in d.targets.shapes.items()}


def merged_delta(deltas: Sequence[QRDelta], weights: Sequence[float], name: str = "") -> QRDelta:
    """The merge as one ΔR (one basis only), e.g. to keep a favourite (λc, λs) as a file."""
    terms = merge(deltas, weights)
    first = deltas[0]
    shapes = union_shapes(deltas)
    # A sum stays triangular only where every part's mask applied in the same basis (O depends on Q and W only).
    bases = {d.triangular_basis for d in deltas}
    triangular = all(d.triangular for d in deltas) and len(bases) == 1
    target_set = TargetSet(first.arch, first.targets.preset, tuple(t.target for t in terms), first.targets.regex, shapes)
    return QRDelta(target_set, first.rank, {t.target.name: t.up for t in terms}, {t.target.name: t.down for t in terms},
                   first.basis_fingerprint, first.base_fingerprint, first.mode, triangular,
                   ", ".join(filter(None, (d.trigger_words for d in deltas))),
                   {"merged_from": [d.name for d in deltas], "weights": list(map(float, weights))}, name=name,
                   triangular_basis=bases.pop() if triangular else "")


_LORA_ARCH = {  # kohya's ss_base_model_version and the model spec's architecture
    "sd15": ("sd_v1", "stable-diffusion-v1/lora"),
    "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
    "sd3": ("sd3", "stable-diffusion-3-medium/lora"),
    "flux": ("flux1", "flux-1-dev/lora"),
    "flux2": ("flux2", "flux-2-dev/lora"),
    "chroma": ("chroma", "chroma/lora"),
    "qwen_image": ("qwen_image", "qwen-image/lora"),
    "lumina2": ("lumina2", "lumina-2/lora"),  # Lumina Image 2.0 and Z-Image share the layout
    "hidream": ("hidream", "hidream-i1/lora"),
    "wan": ("wan", "wan-2/lora"),
    "longcat": ("longcat_image", "longcat-image/lora"),
    "ovis": ("ovis_image", "ovis-image/lora"),
    "mage_flow": ("mage_flow", "mage-flow/lora"),
    "ernie": ("ernie_image", "ernie-image/lora"),
    "krea2": ("krea2", "krea-2/lora"),
    "anima": ("anima", "anima/lora"),
    "ltx2": ("ltx2", "ltx-2/lora"),
}
# The model spec's implementation names the code whose module names the keys follow (ComfyUI's keys are
# the reference implementations'), and its resolution the model's native one.
_SPEC_IMPLEMENTATION = {"sd15": "https://github.com/Stability-AI/generative-models",
                        "sdxl": "https://github.com/Stability-AI/generative-models",
                        "sd3": "https://github.com/Stability-AI/sd3.5",
                        "flux": "https://github.com/black-forest-labs/flux"}
_SPEC_RESOLUTION = {"sd15": "512x512", "sdxl": "1024x1024", "sd3": "1024x1024", "flux": "1024x1024"}
NAMINGS = ("comfyui", "kohya")
# Which loaders read which naming, as the tests measure it (README: "Sharing an export"): the one
# default for the Export node and `qr-lora merge --export-lora`.
DEFAULT_NAMING = "kohya"
NAMING_HELP = ("kohya (lora_unet_…, the default): for sharing; ComfyUI loads it, and so does diffusers' "
               "load_lora_weights for SDXL and FLUX (SD1.5 with unet_config=pipe.unet.config); A1111/Forge and "
               "kohya's tools use this naming. comfyui (diffusion_model.…): ComfyUI loads it, diffusers only for "
               "FLUX. diffusers loads neither for SD3.")


def lora_state_dict(terms: Sequence[PatchTerm], shapes: dict[str, tuple[int, int]], naming: str = "comfyui",
                    dtype: str = "fp16") -> dict[str, torch.Tensor]:
    """One LoRA per weight key. Slices of a fused weight become one exact LoRA on the fused key:
    their up matrices sit on their own rows (zeros elsewhere) and their ranks are stacked."""
    if naming not in NAMINGS:
        raise SettingError(f"LoRA naming must be one of {', '.join(NAMINGS)}, not {naming!r}")
    by_key: dict[str, list[PatchTerm]] = defaultdict(list)
    for t in terms:
        by_key[t.target.key].append(t)
    out = {}
    for key, ts in by_key.items():
        rows = shapes[key][0]
        k = sum(t.rank for t in ts)
        up = torch.zeros(rows, k)
        col = 0
        for t in ts:
            up[t.target.rows(rows), col:col + t.rank] = t.up.float()
            col += t.rank
        down = torch.cat([t.down.float() for t in ts], 0)
        stem = key[: -len(".weight")]
        prefix = f"diffusion_model.{stem}" if naming == "comfyui" else "lora_unet_" + stem.replace(".", "_")
        out[f"{prefix}.lora_up.weight"] = up.to(DTYPES[dtype])
        out[f"{prefix}.lora_down.weight"] = down.to(DTYPES[dtype])
        out[f"{prefix}.alpha"] = torch.tensor(float(k))  # alpha = rank: the stored product is the update itself
    return out


def export_lora(terms: Sequence[PatchTerm], shapes: dict[str, tuple[int, int]], arch: str, path: str | Path,
                naming: str = "comfyui", dtype: str = "fp16", title: str = "", sources: Sequence[str] = (),
                weights: Sequence[float] = (), trigger_words: str = "") -> Path:
    """Write the merge as a standard LoRA file (which loaders read which naming: NAMING_HELP)."""
    sd = lora_state_dict(terms, shapes, naming, dtype)
    meta = lora_metadata(sd, arch, naming, title or Path(path).stem, sources, weights, trigger_words)
    return atomic_save(sd, path, meta)


def module_ranks(keys_and_shapes: Mapping[str, Sequence[int]]) -> dict[int, int]:
    """rank → number of LoRA modules with it, from the file's `lora_down` shapes (a fused FLUX qkv holds 3 ranks)."""
    ranks: dict[int, int] = defaultdict(int)
    for key, shape in keys_and_shapes.items():
        if key.endswith("lora_down.weight"):
            ranks[int(shape[0])] += 1
    return dict(sorted(ranks.items()))


def lora_metadata(sd: Mapping[str, torch.Tensor], arch: str, naming: str, title: str, sources: Sequence[str] = (),
                  weights: Sequence[float] = (), trigger_words: str = "") -> dict[str, str]:
    """kohya's ss_* and the SAI model spec's modelspec.* fields, describing the file as written.

    Every module has alpha = its rank (scale 1). One rank everywhere: ss_network_dim = ss_network_alpha =
    that rank; ranks that differ (fused weights stack their slices' ranks; mixed bases add up) are
    "Dynamic", kohya's value for per-module ranks, with the ranks in qr_lora_module_ranks.
    """
    ranks = module_ranks({k: v.shape for k, v in sd.items()})
    dim = str(next(iter(ranks))) if len(ranks) == 1 else "Dynamic"
    base_version, spec_arch = _LORA_ARCH.get(arch, (arch, f"{arch}/lora"))
    mix = " + ".join(f"{w:g}·{name or 'ΔR'}" for name, w in zip(sources, weights)) or "of ΔR"
    ranks_text = ", ".join(f"{n} of rank {r}" for r, n in ranks.items())
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": dim,
        "ss_network_alpha": dim,
        "ss_base_model_version": base_version,
        "ss_training_comment": f"QR-LoRA merge {mix} (W + Q·Σλ ΔR); modules: {ranks_text}; alpha = rank in each",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": spec_arch,
        "modelspec.implementation": _SPEC_IMPLEMENTATION.get(arch, "https://github.com/comfyanonymous/ComfyUI"),
        "modelspec.implementation_version": f"qr-lora/{_version()}",
        "modelspec.title": title,
        "modelspec.description": f"QR-LoRA merge {mix}, exported as a standard LoRA ({naming} key naming).",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "qr_lora_merge": json.dumps({"sources": list(sources), "weights": list(map(float, weights)), "arch": arch,
                                     "naming": naming}),
        "qr_lora_module_ranks": json.dumps({str(r): n for r, n in ranks.items()}),
    }
    if arch in _SPEC_RESOLUTION:
        meta["modelspec.resolution"] = _SPEC_RESOLUTION[arch]
    if sources:
        meta["modelspec.merged_from"] = ", ".join(name or "ΔR" for name in sources)
    if trigger_words:
        meta["modelspec.trigger_phrase"] = trigger_words
    return meta


def _version() -> str:
    from .. import __version__

    return __version__


def merged_trigger_words(deltas: Sequence[QRDelta]) -> str:
    """The ΔR's trigger words, each once, in order."""
    words: list[str] = []
    for d in deltas:
        for w in (d.trigger_words or "").split(","):
            if w.strip() and w.strip() not in words:
                words.append(w.strip())
    return ", ".join(words)


def export_merge(deltas: Sequence[QRDelta], weights: Sequence[float], path: str | Path, naming: str = "comfyui",
                 dtype: str = "fp16", allow_mixed_bases: bool = False) -> tuple[Path, int]:
    """Merge (eq. 7) and write the result as a standard LoRA; returns the path and the number of modules."""
    terms = merge(deltas, weights, allow_mixed_bases)
    path = export_lora(terms, union_shapes(deltas), deltas[0].arch, path, naming, dtype, title=Path(path).stem,
                       sources=[d.name for d in deltas], weights=weights, trigger_words=merged_trigger_words(deltas))
    return path, len({t.target.key for t in terms})
