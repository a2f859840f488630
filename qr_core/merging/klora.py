"""K-LoRA (Ouyang, Li, Hou, CVPR 2025): per layer and sampling step, the content or the style adapter, whichever
holds the larger sum of its top-K |ΔW| entries, style weighted up as sampling goes on.

As the reference code computes it (HVision-NKU/K-LoRA, `klora.py` and `utils.py`):
- score of a layer: S = Σ of the K largest |ΔW| entries, ΔW = up @ down, K = r_c·r_s (the two ranks);
- balance factor γ (`get_ratio_between_content_and_style`): per layer Σ|ΔW_c| / Σ|ΔW_s| over all entries,
  averaged over the layers, the ratios ≥ 3 × that mean dropped, averaged again;
- time scaling: scale = α·p + β at sampling progress p ∈ [0, 1); pattern "s*" takes it modulo α
  (α = 1.5, β = 0.85·α: the reference's default) and "s" as it is (α = 1.5, β = 0.5);
- the layer applies the content adapter where (S_c / γ) / (S_s · scale) > 1, else the style adapter.

Progress: the reference advances a counter on every K-LoRA layer call and divides it by layers × steps, so
within step n of N its progress climbs from n/N to (n+1)/N over the layers. Here every layer of step n uses
p = n/N (ComfyUI: the step's index in the sampler's sigmas, `step_progress`; the world's sampler: 1 − t), a
difference below 1/N; the reference's wrap to p = 0 on its very last layer call is not reproduced.

λ: ΔW_c = λc·ΔW, ΔW_s = λs·ΔW scale S_c, S_s and γ alike, so for λ ≠ 0 the choices do not depend on λ (γ
cancels it): the plan is computed once from the adapters as given and λ only scales what is applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence, Union

import torch

from ..errors import SettingError

# (α, β) per pattern, the reference's inference_sd.py / inference_flux.py
PATTERNS = {"s*": (1.5, 1.5 * 0.85), "s": (1.5, 0.5)}
DEFAULT_PATTERN = "s*"
OUTLIER_FACTOR = 3.0  # γ drops the layer ratios at or above this multiple of their mean
CHUNK_ELEMENTS = 1 << 22  # entries of ΔW formed at once while scoring (16 MiB in fp32)

# A layer's update: dense ΔW, or (up, down) with ΔW = up @ down (a LoRA's B, A; QR-LoRA's Q, ΔR).
Update = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def time_scale(progress: float, pattern: str = DEFAULT_PATTERN, alpha: float | None = None,
               beta: float | None = None) -> float:
    """The factor on the style score at sampling progress p (0 = first step): α·p + β, modulo α for "s*"."""
    alpha, beta = _constants(pattern, alpha, beta)
    scale = alpha * progress + beta
    return math.fmod(scale, alpha) if pattern == "s*" else scale


def _constants(pattern: str, alpha: float | None, beta: float | None) -> tuple[float, float]:
    if pattern not in PATTERNS:
        raise SettingError(f"unknown K-LoRA pattern {pattern!r}; choose one of {', '.join(PATTERNS)}.")
    a, b = PATTERNS[pattern]
    a = a if alpha is None else float(alpha)
    b = b if beta is None else float(beta)
    if not (a > 0 and b >= 0 and math.isfinite(a) and math.isfinite(b)):
        raise SettingError(f"K-LoRA's time scaling needs α > 0 and β ≥ 0 (got α = {a:g}, β = {b:g}).")
    return a, b


def rank_of(update: Update) -> int:
    """The rank a layer's update contributes to K: the inner size of (up, down), the numerical rank of a dense ΔW."""
    if isinstance(update, tuple):
        return int(update[1].shape[0])
    # the tolerance of the update's own precision: a float32 product's rounding is not rank
    m = update.detach().flatten(1)
    eps = torch.finfo(m.dtype if m.is_floating_point() else torch.float32).eps
    return int(torch.linalg.matrix_rank(m.double(), rtol=max(m.shape) * eps))


def scores(update: Update, k: int, device: torch.device | str | None = None,
           chunk_elements: int = CHUNK_ELEMENTS) -> tuple[float, float]:
    """(Σ of the k largest |ΔW| entries, Σ |ΔW|) of one layer, exact, without forming more than
    `chunk_elements` entries of ΔW at once: the top k of each row block join the running top k.

    k is capped at the number of entries (the reference's torch.topk would refuse a larger one).
    """
    if isinstance(update, tuple):
        up, down = (t.detach().to(device, torch.float32).flatten(1) for t in update)
        rows, cols = up.shape[0], down.shape[1]
    else:
        dense = update.detach().to(device, torch.float32).flatten(1)
        rows, cols = dense.shape
    k = min(int(k), rows * cols)
    if k < 1:
        raise SettingError(f"K-LoRA's K must be at least 1 (the product of the two ranks), got {k}.")
    step = max(1, chunk_elements // max(cols, 1))
    best = None
    total = 0.0
    for start in range(0, rows, step):
        block = (up[start:start + step] @ down if isinstance(update, tuple) else dense[start:start + step]).abs()
        total += float(block.sum(dtype=torch.float64))
        values = block.flatten()
        top = torch.topk(values, min(k, values.numel())).values
        if best is not None:
            joined = torch.cat([best, top])
            top = torch.topk(joined, min(k, joined.numel())).values
        best = top
    return float(best.sum(dtype=torch.float64)), total


def balance_factor(abs_sums: Sequence[tuple[float, float]]) -> float:
    """γ from the layers' (Σ|ΔW_c|, Σ|ΔW_s|): the mean ratio, recomputed without ratios ≥ 3 × the first mean.

    Layers whose style update is zero have no ratio and are left out; with no ratio at all, γ = 1.
    As the reference, γ is infinite when every ratio is dropped (all content updates zero).
    """
    ratios = [c / s for c, s in abs_sums if s > 0]
    if not ratios:
        return 1.0
    mean = sum(ratios) / len(ratios)
    kept = [r for r in ratios if r < OUTLIER_FACTOR * mean]
    return sum(kept) / len(kept) if kept else math.inf


@dataclass(frozen=True)
class KLoRAPlan:
    """Which adapter each layer applies at any progress: the layers' top-K sums, γ and the time scaling."""

    top_k: Mapping[Hashable, tuple[float, float]]  # layer -> (S_c, S_s), the adapters as given (λ = 1)
    gamma: float
    pattern: str = DEFAULT_PATTERN
    alpha: float | None = None
    beta: float | None = None

    @property
    def layers(self) -> tuple[Hashable, ...]:
        return tuple(self.top_k)

    def scale(self, progress: float) -> float:
        return time_scale(progress, self.pattern, self.alpha, self.beta)

    def uses_content(self, layer: Hashable, progress: float) -> bool:
        return self._content(*self.top_k[layer], self.scale(progress))

    def _content(self, s_c: float, s_s: float, scale: float) -> bool:
        # (S_c/γ) / (S_s·scale) > 1, without dividing by zero: scale ≥ 0, so a zero denominator is the
        # reference's inf (content) when S_c > 0 and its nan (style) when S_c = 0.
        weighted = s_c / self.gamma
        den = s_s * scale
        return weighted / den > 1.0 if den > 0 else weighted > 0

    def content_layers(self, progress: float) -> frozenset:
        """The layers that apply the content adapter at this progress (the others apply the style one)."""
        scale = self.scale(progress)
        return frozenset(layer for layer, (s_c, s_s) in self.top_k.items() if self._content(s_c, s_s, scale))

    def content_share(self, progress: float) -> float:
        return len(self.content_layers(progress)) / len(self.top_k) if self.top_k else 0.0

    def describe(self, points: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.95)) -> str:
        alpha, beta = _constants(self.pattern, self.alpha, self.beta)
        shares = ", ".join(f"{p:.0%}: {self.content_share(p):.0%}" for p in points)
        return (f"K-LoRA ({self.pattern}, α {alpha:g}, β {beta:g}, γ {self.gamma:.3g}) on {len(self.top_k)} layers; "
                f"content's share of them at progress {shares}")


def klora_plan(content: Mapping[Hashable, Update], style: Mapping[Hashable, Update],
               pattern: str = DEFAULT_PATTERN, alpha: float | None = None, beta: float | None = None,
               layers: set | frozenset | None = None, ranks: tuple[int | None, int | None] = (None, None),
               device: torch.device | str | None = None) -> KLoRAPlan:
    """The K-LoRA plan for the layers both adapters update (within `layers` when given).

    `ranks` overrides (r_c, r_s) for dense updates (otherwise their numerical rank); K = r_c·r_s per layer.
    γ balances the two adapters over the same layers.
    """
    _constants(pattern, alpha, beta)
    chosen = [name for name in content if name in style and (layers is None or name in layers)]
    top_k, sums = {}, []
    for name in chosen:
        r_c = ranks[0] if ranks[0] is not None and not isinstance(content[name], tuple) else rank_of(content[name])
        r_s = ranks[1] if ranks[1] is not None and not isinstance(style[name], tuple) else rank_of(style[name])
        k = max(1, r_c * r_s)
        c_top, c_abs = scores(content[name], k, device)
        s_top, s_abs = scores(style[name], k, device)
        top_k[name] = (c_top, s_top)
        sums.append((c_abs, s_abs))
    return KLoRAPlan(top_k, balance_factor(sums), pattern, alpha, beta)


def step_progress(sigma: float, sigmas: Sequence[float]) -> float:
    """Sampling progress n/N of a model call at noise level `sigma` in a run over `sigmas` (N steps, N + 1 levels).

    n is the last step whose level is at or above sigma: a call between two levels (Heun's, DPM-2's midpoints)
    belongs to the step it starts from; a level above the first is step 0.
    """
    levels = [float(s) for s in sigmas]
    steps = len(levels) - 1
    if steps < 1:
        return 0.0
    tolerance = 1e-5 * abs(float(sigma))
    n = 0
    for i in range(steps):
        if levels[i] >= float(sigma) - tolerance:
            n = i
    return n / steps


@dataclass(frozen=True)
class KLoRAMerge:
    """K-LoRA on two adapters with λc, λs: what a sampler applies at each step."""

    plan: KLoRAPlan
    content: Mapping[Hashable, Update]
    style: Mapping[Hashable, Update]
    lambda_content: float = 1.0
    lambda_style: float = 1.0

    def parts(self, progress: float) -> list[tuple[dict[Hashable, Update], float]]:
        """[(content's updates, λc), (style's updates, λs)] at this progress: on the plan's layers only the chosen
        adapter's update, elsewhere each adapter's own (plain addition where both update a layer outside the plan)."""
        use_content = self.plan.content_layers(progress)
        planned = set(self.plan.top_k)
        c = {n: u for n, u in self.content.items() if n not in planned or n in use_content}
        s = {n: u for n, u in self.style.items() if n not in planned or n not in use_content}
        return [(c, self.lambda_content), (s, self.lambda_style)]

    def key(self, progress: float) -> frozenset:
        """Equal for two progress values that apply the same updates (to reuse a patched model)."""
        return self.plan.content_layers(progress)


def klora(content: Mapping[Hashable, Update], style: Mapping[Hashable, Update], lambda_content: float = 1.0,
          lambda_style: float = 1.0, pattern: str = DEFAULT_PATTERN, alpha: float | None = None,
          beta: float | None = None, layers: set | frozenset | None = None,
          ranks: tuple[int | None, int | None] = (None, None)) -> KLoRAMerge:
    """K-LoRA merge of a content and a style adapter (layer name -> dense ΔW or (up, down)) at λc, λs.

    A sampler asks `.parts(progress)` at each step (progress = step / steps, 0 first) and applies
    W + Σ λ·ΔW over the parts, e.g. the world's `model_at(t)` with progress 1 − t.
    """
    plan = klora_plan(content, style, pattern, alpha, beta, layers, ranks)
    return KLoRAMerge(plan, content, style, float(lambda_content), float(lambda_style))
