"""Merge modes on the world: one table entry per way of combining a content and a style adapter.

A mode is a family (which adapters it merges: QR-LoRA ΔR or LoRA) and a function
(pair, content, style, λc, λs) -> (model, model_at), where model_at(t), when not None, is the model of the
sampling step at noise level t (modes that change along sampling). `bench/disentangle.py` sweeps every
mode over (λc, λs); `python -m qr_core demo` draws one row per ΔR mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from ..merging.blocks import parse_block_profile, scaled_updates
from ..merging.lambda_schedule import resolve_schedule
from .tasks import Task, Trained, patched_model, scheduled_models, ziplora_merge

QR, LORA = "QR-LoRA ΔR", "LoRA"

# Per-block profiles over the world's FLUX-layout blocks (2 double, 2 single): (content profile, style profile).
BLOCK_PROFILES = {
    "content double, style single": ("single=0", "double=0"),
    "content double only": ("single=0", ""),
    "style single only": ("", "double=0"),
    "content single, style double": ("double=0", "single=0"),
    "double: content 1.5, style 0.5": ("double=1.5", "double=0.5"),
}


@dataclass
class PairRun:
    """One content/style pair (and seed): the base, its tasks, the trained adapters per family, and a cache
    for modes that compute something once per merge (ZipLoRA's merger, K-LoRA's selection)."""

    model: torch.nn.Module
    targets: object
    content: Task
    style: Task
    adapters: dict[str, tuple[Trained, Trained]]
    seed: int = 0
    cache: dict = field(default_factory=dict)


Patch = tuple[torch.nn.Module, Callable | None]


@dataclass(frozen=True)
class MergeMode:
    family: str
    merge: Callable[[PairRun, Trained, Trained, float, float], Patch]
    note: str = ""

    def __call__(self, p: PairRun, lc: float, ls: float) -> Patch:
        c, s = p.adapters[self.family]
        return self.merge(p, c, s, lc, ls)


def add_merge(p: PairRun, c: Trained, s: Trained, lc: float, ls: float) -> Patch:
    return patched_model(p.model, p.targets, [(c.updates, lc), (s.updates, ls)]), None


def schedule_merge(p: PairRun, c: Trained, s: Trained, lc: float, ls: float, name: str) -> Patch:
    return p.model, scheduled_models(p.model, p.targets, c.updates, s.updates, lc, ls, resolve_schedule(name))


def blocks_merge(p: PairRun, c: Trained, s: Trained, lc: float, ls: float, name: str) -> Patch:
    cp, sp = (parse_block_profile(x, p.targets.arch) for x in BLOCK_PROFILES[name])
    cu, su = scaled_updates(c.updates, p.targets, cp), scaled_updates(s.updates, p.targets, sp)
    return patched_model(p.model, p.targets, [(cu, lc), (su, ls)]), None


def ziplora(p: PairRun, c: Trained, s: Trained, lc: float, ls: float, steps: int = 100) -> Patch:
    """ZipLoRA's merger coefficients are learnt once per pair at (1, 1); λc, λs then weight its two parts."""
    if "zip" not in p.cache:
        p.cache["zip"] = ziplora_merge(p.model, p.targets, c, s, p.content, p.style, steps=steps, seed=p.seed,
                                       parts=True)[0]
    cu, su = p.cache["zip"]
    return patched_model(p.model, p.targets, [(cu, lc), (su, ls)]), None


def merge_modes(best: dict | None = None, zip_steps: int = 100, triangular: bool = False,
                families=(QR, LORA)) -> dict[str, MergeMode]:
    """Every merge mode by name, for the adapter `families` given. `best`: per family, the λ schedule and
    block profile to use ({family: {"schedule": name, "blocks": name}}; chosen on selection pairs, see
    bench/disentangle.py); None leaves those modes out."""
    modes = {}
    if LORA in families:
        modes["LoRA addition"] = MergeMode(LORA, add_merge, "W + λc·B_cA_c + λs·B_sA_s")
    if QR in families:
        modes["ΔR addition"] = MergeMode(QR, add_merge, "W + Q(λc·ΔR_c + λs·ΔR_s)")
    if triangular:
        modes["ΔR triangular addition"] = MergeMode(QR + " triangular", add_merge, "the official code's mask")
    for family, short in ((QR, "ΔR"), (LORA, "LoRA")):
        if best and family in best and family in families:
            sched, prof = best[family]["schedule"], best[family]["blocks"]
            modes[f"{short} λ over steps: {sched}"] = MergeMode(family, partial(schedule_merge, name=sched),
                                                                "schedule chosen on the selection pairs")
            modes[f"{short} λ per block: {prof}"] = MergeMode(family, partial(blocks_merge, name=prof),
                                                              "block profile chosen on the selection pairs")
    if zip_steps and LORA in families:
        modes["ZipLoRA"] = MergeMode(LORA, partial(ziplora, steps=zip_steps), f"merger learnt in {zip_steps} steps")
    modes.update({n: m for n, m in later_modes().items() if m.family in families})
    return modes


def later_modes() -> dict[str, MergeMode]:
    """Merge modes from engine modules found by import (K-LoRA, row-side decorrelation of ΔR): a checkout
    without them measures the rest."""
    modes = {}
    try:
        from ..merging import klora as _klora
    except ImportError:
        _klora = None
    if _klora is not None:
        pattern = _klora.DEFAULT_PATTERN
        for family, short in ((QR, "ΔR"), (LORA, "LoRA")):
            modes[f"{short} K-LoRA ({pattern})"] = MergeMode(
                family, partial(klora_merge, pattern=pattern),
                "per layer and step the adapter with the larger top-K |ΔW| sum (K = r_c·r_s), the reference's "
                "time scaling and balance factor")
    try:
        from ..merging import decorrelate as _decorrelate
    except ImportError:
        _decorrelate = None
    if _decorrelate is not None:
        for how in (_decorrelate.STYLE, _decorrelate.BOTH):
            modes[f"ΔR decorrelated ({how})"] = MergeMode(QR, partial(decorrelated_merge, how=how),
                                                          "row-side: ΔR_s·(I − P_row(ΔR_c))" if how == _decorrelate.STYLE
                                                          else "row-side, each off the other's row space")
    return modes


def _rank(t: Trained) -> int:
    return t.lora.rank if t.lora is not None else next(iter(t.delta.delta.values())).shape[0]


def klora_merge(p: PairRun, c: Trained, s: Trained, lc: float, ls: float, pattern: str) -> Patch:
    """K-LoRA on the dense updates (ΔW = Q·ΔR or B·A, K = r_c·r_s), choosing on the attention layers as the paper
    and Merge ΔR's default (`klora_layers` "attention"; the other targets get both updates, added). The world's
    progress at noise level t is 1 − t. The plan does not depend on λ: computed once per pair and family."""
    from ..merging.klora import KLoRAMerge, klora_plan
    from ..targets import select_targets

    key = ("klora", id(c), id(s), pattern)
    if key not in p.cache:
        shapes = {k: v.shape for k, v in p.model.state_dict().items()}
        attention = {t.name for t in select_targets(shapes, "attention")}
        p.cache[key] = klora_plan(c.updates, s.updates, pattern, layers=attention, ranks=(_rank(c), _rank(s)))
    merge = KLoRAMerge(p.cache[key], c.updates, s.updates, lc, ls)
    copies: dict = {}

    def model_at(t: float):
        progress = 1.0 - t
        k = merge.key(progress)
        if k not in copies:
            copies[k] = patched_model(p.model, p.targets, merge.parts(progress))
        return copies[k]
    return p.model, model_at


def decorrelated_merge(p: PairRun, c: Trained, s: Trained, lc: float, ls: float, how: str) -> Patch:
    """Row-side decorrelation of the two ΔR (once per pair), then plain addition."""
    from ..merging.decorrelate import decorrelate
    from .tasks import qr_updates

    key = ("decorrelate", id(c), id(s), how)
    if key not in p.cache:
        dc, ds = decorrelate(c.delta, s.delta, how)
        p.cache[key] = (qr_updates(dc), qr_updates(ds))
    cu, su = p.cache[key]
    return patched_model(p.model, p.targets, [(cu, lc), (su, ls)]), None
