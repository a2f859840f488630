"""SVD-then-QR decomposition of target weights into orthonormal bases Q.

For a torch weight W [out, in] (or a row slice of a fused weight) and rank r,
the paper's Algorithm 1 in torch layout is

    U, Σ, Vᵀ = svd(W);   Q, R_s = qr(U_r Σ_r);   R = R_s V_rᵀ = Qᵀ W

so Q spans the top-r left singular subspace and W_comp = W − Q R is implied.
Only Q (and the top-r singular values, for checks) is kept.

`exact` runs the full SVD in fp32 as the paper did. `fast` runs a randomized
range finder (Halko et al.) with power iterations, then the same QR step: it
captures ≥ 0.99 of the exact top-r energy on trained-weight spectra at a
fraction of the cost. Targets of the same shape are stacked and decomposed in
batches, fetched one batch at a time, so peak extra memory is a small multiple
of one batch.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import torch

from ..errors import TargetError
from ..targets import Target, TargetSet

WeightGetter = Callable[[str], torch.Tensor]
Progress = Callable[[int, int], None]

METHODS = ("fast", "exact")


@dataclass(frozen=True)
class DecomposeSettings:
    rank: int = 64
    method: str = "fast"
    oversample: int = 16  # q = rank + oversample probes; 16 keeps ≥ 0.99 energy with a margin on flat spectra
    power_iters: int = 2  # at least this many power iterations ...
    max_power_iters: int = 8  # ... and more, up to this many, while the energy still missing may exceed ...
    energy_tol: float = 0.01  # ... this share of the captured energy (estimated, see _still_missing)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise TargetError(f"unknown decomposition method '{self.method}'; choose 'fast' or 'exact'.")
        if self.rank < 1:
            raise TargetError(f"rank must be at least 1 (got {self.rank}).")
        if self.oversample < 0 or self.power_iters < 0 or self.max_power_iters < self.power_iters:
            raise TargetError("oversample and power_iters must be ≥ 0, and max_power_iters ≥ power_iters.")

    def to_json(self) -> dict:
        d = asdict(self)
        if self.method == "exact":  # the randomized settings do not change an exact result
            d = {"rank": self.rank, "method": "exact"}
        return d

    @staticmethod
    def from_json(d) -> "DecomposeSettings":
        # Bases cached before the adaptive iterations ran exactly `power_iters`.
        return DecomposeSettings(**{"max_power_iters": d.get("power_iters", 2), "energy_tol": 0.0, **d})


class WeightSource:
    """Fetches target matrices as fp32 on a device, reusing the last fused weight for its other slices."""

    def __init__(self, get_weight: WeightGetter, device: torch.device):
        self._get = get_weight
        self._device = device
        self._last_key: str | None = None
        self._last: torch.Tensor | None = None

    def full(self, key: str) -> torch.Tensor:
        if key != self._last_key:
            self._last = None  # drop the previous weight before fetching the next one
            w = self._get(key)
            if w.ndim != 2:
                raise TargetError(f"{key} has shape {list(w.shape)}: only 2-D Linear weights can be decomposed.")
            self._last_key, self._last = key, w
        return self._last

    def matrix(self, target: Target) -> torch.Tensor:
        w = self.full(target.key)
        return w[target.rows(w.shape[0])].to(self._device, torch.float32)


def check_rank(targets: TargetSet, rank: int) -> None:
    for t in targets:
        m, n = targets.shape(t)
        if rank > min(m, n):
            raise TargetError(
                f"rank {rank} is larger than target {t.name} allows ({m}×{n}, at most {min(m, n)}); "
                f"lower the rank to {min(m, n)} or less, or leave this target out."
            )


def _batches(targets: TargetSet, max_batch_bytes: int) -> Iterator[list[Target]]:
    """Same-shape targets in groups whose fp32 stack stays under max_batch_bytes (at least one target each)."""
    groups: dict[tuple[int, int], list[Target]] = defaultdict(list)
    for t in targets:
        groups[targets.shape(t)].append(t)
    for (m, n), ts in groups.items():
        per = max(1, max_batch_bytes // (4 * m * n))
        for i in range(0, len(ts), per):
            yield ts[i:i + per]


def _stack(matrices: list[torch.Tensor]) -> torch.Tensor:
    # A batch of one (the CPU's default) is a view: stacking would copy every weight once more.
    return matrices[0][None] if len(matrices) == 1 else torch.stack(matrices)


def _qr_basis(u: torch.Tensor, s: torch.Tensor, rank: int) -> torch.Tensor:
    # Algorithm 1, line 6: reduced QR of the scaled top singular vectors.
    q, _ = torch.linalg.qr(u[..., :rank] * s[..., None, :rank])
    return q


def _exact(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, _ = torch.linalg.svd(w, full_matrices=False)
    return _qr_basis(u, s, rank), s[..., :rank]


def _probes(targets: Sequence[Target], n: int, k: int, seed: int, device) -> torch.Tensor:
    # One generator per target, seeded by its name: results do not depend on
    # batch composition or device, and CPU and GPU draw the same probes.
    out = []
    for t in targets:
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(t.name.encode()))
        out.append(torch.randn(n, k, generator=g))
    return torch.stack(out).to(device)


def _randomized(w: torch.Tensor, targets: Sequence[Target], s: DecomposeSettings) -> tuple[torch.Tensor, torch.Tensor]:
    b, m, n = w.shape
    k = s.rank + s.oversample
    if k >= min(m, n):
        return _exact(w, s.rank)
    wt = w.transpose(-1, -2)
    y, _ = torch.linalg.qr(w @ _probes(targets, n, k, s.seed, w.device))
    small_t = wt @ y  # (yᵀW)ᵀ: the next iteration's product, and the Rayleigh–Ritz block below
    evals, evecs = _gram_eigh(small_t)
    energies = [evals[..., -s.rank:].sum(-1)]  # what the rank-r basis from span(y) captures
    for i in range(s.max_power_iters):
        # Trained weights' spectra are flatter than synthetic ones: 2 fixed iterations capture only 0.980 of the
        # exact top-r energy on the shipped world model at rank 16, so iterate while too much may be missing.
        if i >= s.power_iters and bool((_still_missing(energies) <= s.energy_tol * energies[-1]).all()):
            break
        z, _ = torch.linalg.qr(small_t)
        y, _ = torch.linalg.qr(w @ z)
        small_t = wt @ y
        evals, evecs = _gram_eigh(small_t)
        energies.append(evals[..., -s.rank:].sum(-1))
    # Rayleigh–Ritz in span(y): the top singular pairs of yᵀW are the eigenpairs of its small
    # [k, k] Gram matrix (the last iteration's), several times cheaper than an SVD of the [k, n] block.
    top = evecs.flip(-1)[..., : s.rank].to(w.dtype)
    sigma = evals.flip(-1)[..., : s.rank].clamp_min(0).sqrt().to(w.dtype)
    return _qr_basis(y @ top, sigma, s.rank), sigma


def _gram_eigh(small_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs (ascending) of (yᵀW)(yᵀW)ᵀ, from its transpose [n, k]; in fp64, the matrix is only k×k."""
    return torch.linalg.eigh((small_t.transpose(-1, -2) @ small_t).double())


# The geometric tail below underestimates what is still missing (convergence slows as it goes): by up to 4×
# on the benchmark's power-law spectra and 1.4× on the shipped model's trained weights.
_TAIL_SAFETY = 4.0


def _still_missing(energies: list[torch.Tensor]) -> torch.Tensor:
    """Energy that further power iterations would still add, estimated from the last gains.

    The captured energy grows by Δᵢ per iteration, shrinking about
    geometrically (ratio ρ = Δᵢ/Δᵢ₋₁), so about Δᵢ·ρ/(1 − ρ) is still
    missing; times a safety factor measured on synthetic and trained spectra.
    """
    if len(energies) < 3:
        return torch.full_like(energies[-1], float("inf"))
    gain, before = energies[-1] - energies[-2], energies[-2] - energies[-3]
    ratio = (gain / before.clamp_min(1e-300)).clamp(0.0, 0.95)
    return _TAIL_SAFETY * gain.clamp_min(0) * ratio / (1 - ratio)


def decompose(get_weight: WeightGetter, targets: TargetSet, settings: DecomposeSettings,
              device: str | torch.device | None = None, progress: Progress | None = None,
              max_batch_bytes: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Return per-target Q [rows, r] and top-r singular values [r], fp32 on the CPU.

    `get_weight(key)` returns the weight (any float dtype, any device; fp8
    must be dequantized by the caller). `max_batch_bytes` bounds each stack
    of same-shape targets; by default 256 MiB on an accelerator, where the
    per-layer loop is launch-bound, and one target at a time on the CPU,
    where BLAS gains nothing from stacking and the stack costs a copy.
    """
    device = torch.device(device or "cpu")
    if max_batch_bytes is None:
        max_batch_bytes = 0 if device.type == "cpu" else 256 * 2**20
    check_rank(targets, settings.rank)
    src = WeightSource(get_weight, device)
    qs, sigmas = {}, {}
    done = 0
    for batch in _batches(targets, max_batch_bytes):
        w = _stack([src.matrix(t) for t in batch])
        if settings.method == "exact":
            q, sig = _exact(w, settings.rank)
        else:
            q, sig = _randomized(w, batch, settings)
        del w
        for t, qi, si in zip(batch, q.cpu(), sig.cpu()):
            qs[t.name], sigmas[t.name] = qi.contiguous(), si.contiguous()
        done += len(batch)
        if progress:
            progress(done, len(targets))
    return {t.name: qs[t.name] for t in targets}, {t.name: sigmas[t.name] for t in targets}


def captured_energy(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """‖QᵀW‖²_F: the part of W's energy the basis holds (batched over leading dims)."""
    return (q.transpose(-1, -2) @ w).square().sum(dim=(-1, -2))


def energy_check_sample(targets: TargetSet, n: int | None) -> list[Target]:
    """The targets whose energy a cache hit re-checks: every shape at least once, the rest evenly spread.

    Deterministic, so a check that passed once passes again on the same weights.
    """
    every = list(targets)
    if n is None or n >= len(every):
        return every
    chosen: dict[str, Target] = {}
    for t in every:  # every kind of layer (shape) is read at least once
        chosen.setdefault(f"{targets.shape(t)}", t)
    picked = {t.name for t in chosen.values()}
    need = max(0, n - len(picked))
    for i in range(need):
        j = int(i * len(every) / need)
        while every[j].name in picked:  # n < len(every): a free one exists
            j = (j + 1) % len(every)
        picked.add(every[j].name)
    return [t for t in every if t.name in picked]


def check_basis(get_weight: WeightGetter, targets: TargetSet, q: dict[str, torch.Tensor], sigma: dict[str, torch.Tensor],
                rank: int, device: str | torch.device | None = None, rtol: float = 2e-3,
                energy_sample: int | None = None) -> list[str]:
    """Check a stored basis against live weights; return a list of problems (empty if it fits).

    Shapes must match and every Q must be orthonormal (cheap: no weight is
    read). ‖QᵀW‖² must equal Σσᵢ² recorded when Q was computed from these
    weights, so a basis of other weights or a damaged file fails; with
    `energy_sample`, only that many targets (every shape included) are read
    for it: reading every weight would cost more than the rest of a cache hit.
    """
    device = torch.device(device or "cpu")
    problems = []
    for t in targets:
        m, _ = targets.shape(t)
        qt, st = q.get(t.name), sigma.get(t.name)
        if qt is None or st is None:
            problems.append(f"{t.name}: missing from the stored basis")
        elif tuple(qt.shape) != (m, rank) or tuple(st.shape) != (rank,):
            problems.append(f"{t.name}: stored Q is {list(qt.shape)}, expected [{m}, {rank}]")
        else:
            qt = qt.to(device, torch.float32)
            o = float((qt.T @ qt - torch.eye(rank, device=device)).abs().amax())
            if not o < 1e-3:
                problems.append(f"{t.name}: Q is not orthonormal (max |QᵀQ − I| = {o:.2e})")
    if problems:
        return problems
    checked = TargetSet(targets.arch, targets.preset, tuple(energy_check_sample(targets, energy_sample)),
                        targets.regex, targets.shapes)
    src = WeightSource(get_weight, device)
    batch_bytes = 0 if device.type == "cpu" else 256 * 2**20  # as in decompose: stacking only pays on accelerators
    for batch in _batches(checked, batch_bytes):
        qb = torch.stack([q[t.name] for t in batch]).to(device, torch.float32)
        want = torch.stack([sigma[t.name] for t in batch]).to(device, torch.float32).square().sum(-1)
        got = captured_energy(qb, _stack([src.matrix(t) for t in batch]))
        for t, g, e in zip(batch, got.tolist(), want.tolist()):
            if not abs(g - e) <= rtol * max(e, 1e-30):
                problems.append(f"{t.name}: captured energy {g:.6g} ≠ recorded {e:.6g} (weights changed?)")
    return problems

