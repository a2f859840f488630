"""Decomposition benchmark: the paper's exact SVD layer by layer against `fast`.

Runs, in one process, on the real ComfyUI target sets of SDXL, SD3-medium,
FLUX.1-dev, FLUX.2-dev and Qwen-Image (built by `qr_core.targets.select_targets(..., "paper")` from the
models' state-dict key -> shape maps, so fused q/k/v row slices are cut by the
library's own logic) filled with synthetic weights whose singular values
follow a power law (σ_i ∝ i^-decay, random orthonormal singular vectors):

* exact per layer: `decompose(method="exact")` on one target at a time (full
  fp32 `torch.linalg.svd`, the paper's and the official code's way);
* fast per layer: `decompose(method="fast")` on one target at a time;
* fast batched: `decompose(method="fast")` on the whole set: the library's
  normal path, which stacks same-shape targets in batches on a GPU and runs
  one target at a time on the CPU (see `decompose`'s `max_batch_bytes`);
* worst energy ratio: ‖Q_fastᵀW‖² / Σ(exact top-r σ²) over the sampled layers;
* fingerprint time of the set's weights (`fingerprint_weights`, sampled mode);
* cache: `get_basis` twice into a temporary `BasisCache`; the second call is
  the warm load (cache hit, validated against the live weights).

Exact SVD of every layer is too slow to run in full on a CPU (FLUX would take
hours), so per distinct target shape `--samples-per-shape` layers are timed
and the total is extrapolated by count (fields `est_*`, flag `extrapolated`).
A set whose weights do not fit the memory budget is not built whole: its
batched time is then measured on the sampled layers and extrapolated too, and
fingerprint and cache steps are skipped (reported as null with the reason).

Weights are stored in `--dtype` (bf16 by default, as ComfyUI holds them) on
the benchmark device. Results go to `<out-dir>/decompose-<machine>.json` and
`.md`, machine being e.g. `cpu-2core` or `cuda-nvidia-h200`.

`fast` uses the library's DecomposeSettings defaults unless --oversample /
--power-iters say otherwise; each set records the settings it ran with
(`fast_settings`). On a shared CPU, wall times suffer from other processes:
process CPU times are recorded as well (`cpu_time`), with the load average.

    python bench/decompose.py                       # all sets on the CPU
    python bench/decompose.py --device cuda         # on a GPU (all sets built whole, FLUX cache step)
    python bench/decompose.py --sets flux --samples-per-shape 1 --merge   # add/replace one set in the file
    python bench/decompose.py --quick --out-dir /tmp/x   # tiny shapes, CI smoke
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from paired import loadavg, spread  # this folder
from qr_core.bases.cache import BasisCache, get_basis
from qr_core.bases.decompose import DecomposeSettings, captured_energy, decompose
from qr_core.bases.fingerprint import fingerprint_weights
from qr_core.machine import machine_info
from qr_core.targets import TargetSet, select_targets

SETS = ("sdxl", "sd3", "flux", "flux2", "qwen_image")

# The targets (issue 2, section Benchmark).
TARGET_CPU_SDXL_SPEEDUP = 15.0
TARGET_GPU_FLUX_FAST_S = 2.0
TARGET_GPU_FLUX_ENERGY = 0.99
TARGET_GPU_FLUX_WARM_S = 0.5


# ---------------------------------------------------------------------------
# Shape maps of the real models (ComfyUI diffusion-model keys, no prefix)
# ---------------------------------------------------------------------------

def sdxl_shapes(chans=(320, 640, 1280), depths=(0, 2, 10), ctx=2048, adm=2816) -> dict:
    """SDXL UNet: transformer blocks at input 4,5 / 7,8, the middle block and output 0-5."""
    shapes = {"label_emb.0.0.weight": (chans[0] * 4, adm)}
    spots = []  # (prefix, channels, depth)
    for level, (c, d) in enumerate(zip(chans, depths)):
        for j in range(2):
            spots.append((f"input_blocks.{1 + 3 * level + j}.1", c, d))
    spots.append(("middle_block.1", chans[-1], depths[-1]))
    for level in reversed(range(len(chans))):
        for j in range(3):
            spots.append((f"output_blocks.{3 * (len(chans) - 1 - level) + j}.1", chans[level], depths[level]))
    for prefix, c, d in spots:
        for b in range(d):
            p = f"{prefix}.transformer_blocks.{b}."
            for attn, kv_in in (("attn1", c), ("attn2", ctx)):
                shapes[p + f"{attn}.to_q.weight"] = (c, c)
                shapes[p + f"{attn}.to_k.weight"] = (c, kv_in)
                shapes[p + f"{attn}.to_v.weight"] = (c, kv_in)
                shapes[p + f"{attn}.to_out.0.weight"] = (c, c)
            shapes[p + "ff.net.0.proj.weight"] = (8 * c, c)  # GEGLU
            shapes[p + "ff.net.2.weight"] = (c, 4 * c)
    return shapes


def sd3_shapes(depth=24, hidden=1536) -> dict:
    """SD3-medium MMDiT: fused qkv per stream; the last context block is pre_only (no proj, no MLP)."""
    shapes = {}
    for n in range(depth):
        for stream in ("x_block", "context_block"):
            p = f"joint_blocks.{n}.{stream}."
            shapes[p + "attn.qkv.weight"] = (3 * hidden, hidden)
            if stream == "context_block" and n == depth - 1:
                continue
            shapes[p + "attn.proj.weight"] = (hidden, hidden)
            shapes[p + "mlp.fc1.weight"] = (4 * hidden, hidden)
            shapes[p + "mlp.fc2.weight"] = (hidden, 4 * hidden)
    return shapes


def flux_shapes(doubles=19, singles=38, hidden=3072, mlp=12288) -> dict:
    """FLUX.1-dev: 19 double blocks (img/txt streams), 38 single blocks with fused linear1."""
    shapes = {}
    for n in range(doubles):
        for s in ("img", "txt"):
            p = f"double_blocks.{n}.{s}_"
            shapes[p + "attn.qkv.weight"] = (3 * hidden, hidden)
            shapes[p + "attn.proj.weight"] = (hidden, hidden)
            shapes[p + "mlp.0.weight"] = (mlp, hidden)
            shapes[p + "mlp.2.weight"] = (hidden, mlp)
    for n in range(singles):
        p = f"single_blocks.{n}."
        shapes[p + "linear1.weight"] = (3 * hidden + mlp, hidden)
        shapes[p + "linear2.weight"] = (hidden, hidden + mlp)
    return shapes


def flux2_shapes(doubles=8, singles=48, hidden=6144, mlp=18432) -> dict:
    """FLUX.2-dev (ComfyUI's Flux2 with its detected config): FLUX.1's keys, no biases, gated SiLU MLPs
    (the MLP input holds gate and value: 2·mlp rows, also in the single blocks' fused linear1)."""
    shapes = flux_shapes(doubles, singles, hidden, mlp)
    shapes["double_stream_modulation_img.lin.weight"] = (6 * hidden, hidden)  # FLUX.2's marker key
    for key in shapes:
        if key.endswith("mlp.0.weight"):
            shapes[key] = (2 * mlp, hidden)
        elif key.endswith("linear1.weight"):
            shapes[key] = (3 * hidden + 2 * mlp, hidden)
    return shapes


def qwen_image_shapes(blocks=60, hidden=3072, mlp=12288) -> dict:
    """Qwen-Image: 60 dual-stream blocks, separate q/k/v per stream, a GELU MLP per stream."""
    shapes = {"txt_norm.weight": (3584,)}  # the key that tells Qwen-Image apart (detection's marker)
    for n in range(blocks):
        p = f"transformer_blocks.{n}."
        for name in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            shapes[p + f"attn.{name}.weight"] = (hidden, hidden)
        for stream in ("img", "txt"):
            shapes[p + f"{stream}_mlp.net.0.proj.weight"] = (mlp, hidden)
            shapes[p + f"{stream}_mlp.net.2.weight"] = (hidden, mlp)
    return shapes


FULL = {"sdxl": sdxl_shapes, "sd3": sd3_shapes, "flux": flux_shapes, "flux2": flux2_shapes,
        "qwen_image": qwen_image_shapes}
QUICK = {  # same structure, tiny widths: exercises every code path in seconds
    "sdxl": lambda: sdxl_shapes(chans=(16, 32, 64), depths=(0, 1, 1), ctx=96, adm=80),
    "sd3": lambda: sd3_shapes(depth=2, hidden=64),
    "flux": lambda: flux_shapes(doubles=1, singles=2, hidden=64, mlp=256),
    "flux2": lambda: flux2_shapes(doubles=1, singles=2, hidden=64, mlp=192),
    "qwen_image": lambda: qwen_image_shapes(blocks=2, hidden=64, mlp=256),
}
LABELS = {"sdxl": "SDXL UNet attn1+attn2 q,k,v,out", "sd3": "SD3-medium q,k,v,proj x2 streams",
          "flux": "FLUX.1-dev paper targets (342)", "flux2": "FLUX.2-dev paper targets (240)",
          "qwen_image": "Qwen-Image paper targets (720)"}


# ---------------------------------------------------------------------------
# Synthetic weights with a power-law spectrum
# ---------------------------------------------------------------------------

class SyntheticWeights:
    """Weights of a target set: each target block is U diag(σ) Vᵀ with σ_i ∝ i^-decay.

    U and V are signed row permutations and column selections of one random
    orthonormal basis per (dim, rank) pair, drawn once: exactly orthonormal, a
    different subspace per layer, and one matmul per block to build. Rows of a
    fused weight that no target covers (FLUX linear1's MLP input) are Gaussian.
    """

    def __init__(self, targets: TargetSet, device, dtype, decay: float, seed: int, rms: float = 0.02):
        self.targets, self.device, self.dtype, self.decay, self.seed, self.rms = targets, device, dtype, decay, seed, rms
        self._bases: dict[tuple[int, int], torch.Tensor] = {}
        self.store: dict[str, torch.Tensor] = {}
        self.by_key = defaultdict(list)
        for t in targets:
            self.by_key[t.key].append(t)

    def _gen(self, tag: str) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed * 7919 + zlib.crc32(tag.encode()))

    def _basis(self, d: int, k: int) -> torch.Tensor:
        if (d, k) not in self._bases:
            g = self._gen(f"basis/{d}x{k}")
            self._bases[(d, k)] = torch.linalg.qr(torch.randn(d, k, generator=g, device=self.device))[0]
        return self._bases[(d, k)]

    def spectrum(self, m: int, n: int) -> torch.Tensor:
        k = min(m, n)
        s = torch.arange(1, k + 1, dtype=torch.float64, device=self.device) ** -self.decay
        return (s * (self.rms * math.sqrt(m * n) / s.square().sum().sqrt())).float()

    def block(self, name: str, m: int, n: int) -> torch.Tensor:
        k = min(m, n)
        g = self._gen(name)

        def factor(d):
            b = self._basis(d, k)
            rows = torch.randperm(d, generator=g, device=self.device)
            cols = torch.randperm(k, generator=g, device=self.device)
            signs = torch.randint(0, 2, (d, 1), generator=g, device=self.device).float() * 2 - 1
            return b[rows][:, cols] * signs

        u, v = factor(m), factor(n)
        return (u * self.spectrum(m, n)) @ v.T

    def build(self, key: str) -> torch.Tensor:
        rows, cols = self.targets.shapes[key]
        w = torch.empty(rows, cols, dtype=self.dtype, device=self.device)
        covered = torch.zeros(rows, dtype=torch.bool)
        for t in self.by_key[key]:
            r = t.rows(rows)
            w[r] = self.block(t.name, r.stop - r.start, cols).to(self.dtype)
            covered[r] = True
        if not covered.all():
            idx = (~covered).nonzero().squeeze(1).to(self.device)
            w[idx] = (torch.randn(len(idx), cols, generator=self._gen(key + "/rest"), device=self.device)
                      * self.rms).to(self.dtype)
        return w

    def materialize(self, keys) -> None:
        for k in keys:
            if k not in self.store:
                self.store[k] = self.build(k)

    def drop(self) -> None:
        self.store.clear()

    def __call__(self, key: str) -> torch.Tensor:
        if key not in self.store:  # a benchmark bug, not a lazy path: timings must not include generation
            raise KeyError(f"weight {key} was not materialized before timing")
        return self.store[key]


def stored_bytes(targets: TargetSet, dtype) -> int:
    es = torch.empty(0, dtype=dtype).element_size()
    return sum(r * c * es for r, c in targets.shapes.values())


def subset(targets: TargetSet, chosen) -> TargetSet:
    chosen = tuple(chosen)
    keys = {t.key for t in chosen}
    return TargetSet(targets.arch, targets.preset, chosen, targets.regex,
                     {k: v for k, v in targets.shapes.items() if k in keys})


# ---------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    """(wall seconds, process CPU seconds, result)."""
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def default_budget(device: torch.device) -> int:
    """Bytes of stored weights a set may take to be built whole."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.45)
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(min(6 * 2**30, 0.3 * avail)) if avail else 4 * 2**30


# ---------------------------------------------------------------------------
# One target set
# ---------------------------------------------------------------------------

@dataclass
class Options:
    device: torch.device
    dtype: torch.dtype
    rank: int
    oversample: int
    power_iters: int
    samples: int
    pairs: int
    decay: float
    seed: int
    budget: int
    max_batch_bytes: int | None
    cache: bool
    log: callable


def sample_layers(groups: dict, n: int) -> dict:
    """Per shape, n layers evenly spaced in its group (all of them when the group is small)."""
    samples = {}
    for shp, ts in groups.items():
        k = min(n, len(ts))
        idx = sorted({round(i * (len(ts) - 1) / max(k - 1, 1)) for i in range(k)}) if k > 1 else [0]
        samples[shp] = [ts[i] for i in idx]
    return samples


def warm_up(src, targets: TargetSet, samples: dict, fast, exact, dev) -> list[str]:
    """Untimed runs: kernels, LAPACK / cuSOLVER handles and the allocator's buffers of each shape (the first
    large allocation of a size costs page faults on the CPU). Exact is warmed up per shape on a GPU and for
    shapes up to 1536x1536 on the CPU (larger CPU SVDs take minutes). Returns the shapes exact warmed up."""
    warm_exact = []
    for (m, n), ts in samples.items():
        one = subset(targets, ts[:1])
        decompose(src, one, fast, device=dev)
        if dev.type == "cuda" or m * n * min(m, n) <= 1536**3:
            decompose(src, one, exact, device=dev)
            warm_exact.append(f"{m}x{n}")
    torch.linalg.svd(torch.randn(64, 64, device=dev))
    return warm_exact


def time_pairs(name: str, src, targets: TargetSet, groups: dict, samples: dict, fast, exact, whole: bool,
               warm_exact, o: Options) -> tuple[dict, dict, dict]:
    """Exact, fast and fast batched, interleaved: pair j runs every sampled layer by exact then by fast (one
    target at a time), then the library's batched path once; o.pairs pairs after the warm-up. A slow moment
    of the machine then hits both sides of a pair, and each pair gives its own ratio.

    Batched runs the whole set when it was built, else each shape's sampled layers stacked and extrapolated
    by that shape's count. Returns the per-shape rows, the exact σ of the sampled layers and the batched runs.
    """
    dev = o.device
    per_shape, exact_sigma = {}, {}
    for (m, n), ts in samples.items():
        per_shape[f"{m}x{n}"] = {"count": len(groups[(m, n)]), "sampled": len(ts),
                                 "exact_warmed_up": f"{m}x{n}" in warm_exact, "exact_s": [], "fast_s": [],
                                 "exact_cpu_s": [], "fast_cpu_s": [], "energy_ratio": []}
    batched = {"set": targets if whole else subset(targets, [t for ts in samples.values() for t in ts]),
               "runs": [], "extrapolated": not whole}
    for j in range(o.pairs):
        for (m, n), ts in samples.items():
            rows = per_shape[f"{m}x{n}"]
            for t in ts:
                one = subset(targets, [t])
                te, ce, (_, se) = timed(dev, lambda: decompose(src, one, exact, device=dev))
                tf, cf, (qf, _) = timed(dev, lambda: decompose(src, one, fast, device=dev))
                for k, v in (("exact_s", te), ("fast_s", tf), ("exact_cpu_s", ce), ("fast_cpu_s", cf)):
                    rows[k].append(v)
                if j == 0:
                    w = src(t.key)[t.rows(src(t.key).shape[0])].to(dev, torch.float32)
                    ratio = (captured_energy(qf[t.name].to(dev), w) / se[t.name].to(dev).square().sum()).item()
                    exact_sigma[t.name] = se[t.name]
                    rows["energy_ratio"].append(ratio)
                    o.log(f"[{name}] {m}x{n} {t.name}: exact {te:.3f} s, fast {tf:.4f} s, energy ratio {ratio:.5f}")
        if whole:
            t_b, c_b, (qb, _) = timed(dev, lambda: decompose(src, targets, fast, device=dev,
                                                             max_batch_bytes=o.max_batch_bytes))
            run = {"measured_s": t_b, "total_s": t_b, "cpu_s": c_b, "q": qb}
        else:
            run = {"measured_s": 0.0, "total_s": 0.0, "cpu_s": 0.0, "q": {}}
            for (m, n), ts in samples.items():
                part = subset(targets, ts)
                tp, cp, (qp, _) = timed(dev, lambda: decompose(src, part, fast, device=dev,
                                                               max_batch_bytes=o.max_batch_bytes))
                run["q"].update(qp)
                run["measured_s"] += tp
                run["total_s"] += tp * len(groups[(m, n)]) / len(ts)
                run["cpu_s"] += cp * len(groups[(m, n)]) / len(ts)
        o.log(f"[{name}] pair {j + 1}/{o.pairs}: fast batched {run['measured_s']:.3f} s")
        batched["runs"].append(run if j == o.pairs - 1 else {k: v for k, v in run.items() if k != "q"})
    batched["q"] = batched["runs"][-1].pop("q")
    for rows in per_shape.values():
        for k in ("exact_s", "fast_s", "exact_cpu_s", "fast_cpu_s"):
            rows[k + "_median"] = median(rows[k])
        rows["est_exact_total_s"] = rows["exact_s_median"] * rows["count"]
        rows["est_fast_total_s"] = rows["fast_s_median"] * rows["count"]
    return per_shape, exact_sigma, batched


def pair_estimates(per_shape: dict, batched: dict, key: str, pairs: int) -> list[tuple[float, float, float]]:
    """Per pair j: (exact per layer, fast per layer, fast batched) totals for the whole set, extrapolated by
    count from that pair's sampled layers (`key`: "s" wall time or "cpu_s" process CPU time)."""
    out = []
    for j in range(pairs):
        exact_j = fast_j = 0.0
        for rows in per_shape.values():
            k = rows["sampled"]
            exact_j += rows["count"] * sum(rows[f"exact_{key}"][j * k:(j + 1) * k]) / k
            fast_j += rows["count"] * sum(rows[f"fast_{key}"][j * k:(j + 1) * k]) / k
        out.append((exact_j, fast_j, batched["runs"][j]["total_s" if key == "s" else "cpu_s"]))
    return out


def fingerprint_and_cache(name: str, src, targets: TargetSet, fast, whole: bool, res: dict, o: Options) -> None:
    """Fingerprint time and a cold then warm get_basis into a temporary cache (sets built whole only)."""
    dev = o.device
    if whole:
        keys = list(targets.shapes)
        res["fingerprint_s"], _, _ = timed(dev, lambda: fingerprint_weights(src, keys))
        o.log(f"[{name}] fingerprint of {len(keys)} weights: {res['fingerprint_s']:.3f} s")
    else:
        res["skipped"].append("fingerprint (set not built whole)")
    if whole and o.cache:
        with tempfile.TemporaryDirectory(prefix="qr-bench-cache-") as d:
            cache = BasisCache(d)
            res["cache_cold_s"], _, b1 = timed(dev, lambda: get_basis(src, targets, fast, cache, dev))
            res["cache_warm_s"], _, b2 = timed(dev, lambda: get_basis(src, targets, fast, cache, dev))
            res["cache_cold_status"], res["cache_warm_status"] = b1.cache_status, b2.cache_status
            res["cache_file_MB"] = round(sum(p.stat().st_size for p in Path(d).glob("*.safetensors")) / 2**20, 1)
        o.log(f"[{name}] cache: cold {res['cache_cold_s']:.2f} s ({b1.cache_status}), "
              f"warm {res['cache_warm_s']:.3f} s ({b2.cache_status})")
    elif not whole:
        res["skipped"].append("cache (set not built whole)")
    else:
        res["skipped"].append("cache (not run for this set on this device)")


def run_set(name: str, shapes: dict, o: Options) -> dict:
    log, dev = o.log, o.device
    load0 = loadavg()
    targets = select_targets(shapes, "paper")
    fast = DecomposeSettings(rank=o.rank, method="fast", oversample=o.oversample, power_iters=o.power_iters,
                             seed=o.seed)
    exact = DecomposeSettings(rank=o.rank, method="exact")
    groups = defaultdict(list)
    for t in targets:
        groups[targets.shape(t)].append(t)
    need = stored_bytes(targets, o.dtype)
    whole = need <= o.budget
    log(f"[{name}] {targets.describe()}; {len(groups)} shapes; weights {need / 2**30:.2f} GiB "
        f"{'built whole' if whole else 'over budget: sampled layers only'}")
    samples = sample_layers(groups, o.samples)
    sampled = [t for ts in samples.values() for t in ts]
    src = SyntheticWeights(targets, dev, o.dtype, o.decay, o.seed)
    t_gen, _, _ = timed(dev, lambda: src.materialize(targets.shapes if whole else {t.key for t in sampled}))
    log(f"[{name}] generated weights in {t_gen:.1f} s")

    warm_exact = warm_up(src, targets, samples, fast, exact, dev)
    per_shape, exact_sigma, batched = time_pairs(name, src, targets, groups, samples, fast, exact, whole,
                                                 warm_exact, o)
    worst = min([1.0] + [r for rows in per_shape.values() for r in rows["energy_ratio"]])
    batched_set, qb = batched["set"], batched["q"]
    # Every batched Q against the known (nominal) spectrum: covers all layers, not just the sampled ones.
    worst_batched_nominal = 1.0
    for t in batched_set:
        m, n = batched_set.shape(t)
        w = src(t.key)[t.rows(src(t.key).shape[0])].to(dev, torch.float32)
        ref = src.spectrum(m, n)[: o.rank].square().sum()
        worst_batched_nominal = min(worst_batched_nominal, (captured_energy(qb[t.name].to(dev), w) / ref).item())
    for t in sampled:  # batched Q of the sampled layers against their exact σ
        w = src(t.key)[t.rows(src(t.key).shape[0])].to(dev, torch.float32)
        worst = min(worst, (captured_energy(qb[t.name].to(dev), w) / exact_sigma[t.name].to(dev).square().sum()).item())

    wall = pair_estimates(per_shape, batched, "s", o.pairs)
    speedup_batched = spread([e / b for e, _, b in wall])
    speedup_per_layer = spread([e / f for e, f, _ in wall])
    batched_total = median([b for _, _, b in wall])
    log(f"[{name}] fast batched: {median([r['measured_s'] for r in batched['runs']]):.3f} s (median) on "
        f"{len(batched_set)} targets" + (f" -> est. {batched_total:.2f} s for {len(targets)}"
                                         if batched["extrapolated"] else "")
        + f"; speedup {speedup_batched['median']:.1f}× ({speedup_batched['min']:.1f}–{speedup_batched['max']:.1f})")
    cpu = pair_estimates(per_shape, batched, "cpu_s", o.pairs) if dev.type == "cpu" else None
    res = {
        "label": LABELS.get(name, name), "arch": targets.arch, "preset": targets.preset,
        "fast_settings": fast.to_json(), "samples_per_shape": o.samples, "pairs": o.pairs,
        "layers": len(targets), "row_slices": sum(t.is_slice for t in targets),
        "params_M": round(sum(m * n for m, n in (targets.shape(t) for t in targets)) / 1e6, 1),
        "stored_weights_GiB": round(need / 2**30, 2), "built_whole": whole, "generate_s": t_gen,
        "per_shape": per_shape,
        "extrapolated": any(r["sampled"] < r["count"] for r in per_shape.values()),
        "est_exact_per_layer_total_s": median([e for e, _, _ in wall]),
        "est_fast_per_layer_total_s": median([f for _, f, _ in wall]),
        "fast_batched_total_s": batched_total,
        "fast_batched_measured_s": median([r["measured_s"] for r in batched["runs"]]),
        "fast_batched_measured_layers": len(batched_set),
        "fast_batched_extrapolated": batched["extrapolated"],
        "speedup_per_layer": speedup_per_layer["median"], "speedup_per_layer_spread": speedup_per_layer,
        "speedup_batched": speedup_batched["median"], "speedup_batched_spread": speedup_batched,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "loadavg_start": load0,
        "worst_energy_ratio": worst,
        # Process CPU time (all threads): the work done, but on a shared CPU inflated too (OpenMP
        # threads spin while descheduled). Meaningless on a GPU (host waits), so null there.
        "cpu_time": None if cpu is None else {
            "est_exact_per_layer_total_s": median([e for e, _, _ in cpu]),
            "est_fast_per_layer_total_s": median([f for _, f, _ in cpu]),
            "fast_batched_total_s": median([b for _, _, b in cpu]),
            "speedup_batched": median([e / b for e, _, b in cpu]),
            "speedup_per_layer": median([e / f for e, f, _ in cpu])},
        "worst_energy_ratio_batched_vs_nominal": worst_batched_nominal,
        "energy_ratio_layers": len(sampled),
        "fingerprint_s": None, "cache_cold_s": None, "cache_warm_s": None, "cache_warm_status": None,
        "skipped": [],
    }
    fingerprint_and_cache(name, src, targets, fast, whole, res, o)
    res["loadavg_end"] = loadavg()
    src.drop()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

TRAINED_RANKS = (16, 32, 64)


def trained_weight_rows(device: torch.device, seed: int) -> list[dict]:
    """fast against exact on trained weights: the shipped world model's `paper` targets at several ranks.

    Synthetic power laws decay faster than trained spectra; these are the weights where 2 fixed power
    iterations captured only 0.980 of the exact top-r energy (rank 16).
    """
    from qr_core.world.model import ASSET

    import safetensors.torch

    weights = safetensors.torch.load_file(str(ASSET), device=str(device))
    targets = select_targets({k: v.shape for k, v in weights.items()}, "paper")
    get = weights.__getitem__
    rows = []
    for rank in TRAINED_RANKS:
        exact_s, _, (_, s_exact) = timed(device, lambda: decompose(get, targets, DecomposeSettings(
            rank=rank, method="exact"), device))
        fast_s, _, (q_fast, _) = timed(device, lambda: decompose(get, targets, DecomposeSettings(rank=rank, seed=seed),
                                                                 device))
        ratios = []
        for t in targets:
            w = get(t.key).float()
            ratios.append(float(captured_energy(q_fast[t.name].to(device), w[t.rows(w.shape[0])])
                                / s_exact[t.name].to(device).square().sum()))
        rows.append({"rank": rank, "targets": len(targets), "worst_energy_ratio": min(ratios),
                     "below_0.99": sum(r < 0.99 for r in ratios), "exact_s": exact_s, "fast_s": fast_s})
    return rows


def check_targets(results: dict, device: torch.device) -> dict:
    out = {}
    sdxl, flux = results["sets"].get("sdxl"), results["sets"].get("flux")
    if device.type == "cpu":
        out["cpu_sdxl_fast_speedup_ge_15x"] = (
            None if sdxl is None else {
                "target": TARGET_CPU_SDXL_SPEEDUP, "value": sdxl["speedup_batched"],
                "batched": sdxl["speedup_batched"], "per_layer": sdxl["speedup_per_layer"],
                "batched_cpu_time": (sdxl.get("cpu_time") or {}).get("speedup_batched"),
                "per_layer_cpu_time": (sdxl.get("cpu_time") or {}).get("speedup_per_layer"),
                "met": sdxl["speedup_batched"] >= TARGET_CPU_SDXL_SPEEDUP,
                "note": "met = wall-time speedup of fast batched (the library's path) over exact per layer"})
        for k in ("gpu_flux_fast_le_2s", "gpu_flux_energy_ge_0.99", "gpu_flux_warm_cache_le_0.5s"):
            out[k] = "n/a (CPU run)"
    else:
        out["cpu_sdxl_fast_speedup_ge_15x"] = "n/a (GPU run)"
        if flux is None:
            out["gpu_flux_fast_le_2s"] = out["gpu_flux_energy_ge_0.99"] = out["gpu_flux_warm_cache_le_0.5s"] = None
        else:
            out["gpu_flux_fast_le_2s"] = {"target": TARGET_GPU_FLUX_FAST_S, "value": flux["fast_batched_total_s"],
                                          "extrapolated": flux["fast_batched_extrapolated"],
                                          "met": flux["fast_batched_total_s"] <= TARGET_GPU_FLUX_FAST_S}
            e = min(flux["worst_energy_ratio"], flux["worst_energy_ratio_batched_vs_nominal"])
            out["gpu_flux_energy_ge_0.99"] = {"target": TARGET_GPU_FLUX_ENERGY, "value": e,
                                              "met": e >= TARGET_GPU_FLUX_ENERGY}
            w = flux["cache_warm_s"]
            out["gpu_flux_warm_cache_le_0.5s"] = {"target": TARGET_GPU_FLUX_WARM_S, "value": w,
                                                  "met": None if w is None else w <= TARGET_GPU_FLUX_WARM_S}
    return out


def fmt_s(x):
    if x is None:
        return "—"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_spread(s: dict, key: str) -> str:
    sp = s.get(key + "_spread")
    if not sp:  # results of runs before paired timing
        return f"{s[key]:.1f}×"
    return f"{sp['median']:.1f}× ({sp['min']:.1f}–{sp['max']:.1f}, {sp['n']} pairs)"


def markdown(r: dict) -> str:
    m = r["machine"]
    head = f"{m['gpu']} (torch {m['torch']})" if m["gpu"] else f"{m['cpu']}, {m['cores']} cores (torch {m['torch']})"
    lines = [f"# Decomposition benchmark: {m['slug']}", "",
             f"{head}; rank {r['settings']['rank']}, fast = q {r['settings']['rank'] + r['settings']['oversample']}, "
             f"{r['settings']['power_iters']} power iterations; synthetic weights σ_i ∝ i^-{r['settings']['decay']} "
             f"stored as {r['settings']['dtype']} on {m['device']}; sampled layers per shape: see the "
             f"per-shape table{' (QUICK smoke run: tiny shapes)' if r['quick'] else ''}.", "",
             f"Exact, fast and fast batched run interleaved, {r['settings']['pairs']} pairs after a warm-up; times "
             f"are medians over the pairs, speedups the median (min–max) of the per-pair ratios. Load average "
             f"{r['loadavg_start']} at the start, {r.get('loadavg_end')} at the end.", "",
             "| set | layers | exact per layer | fast per layer | fast batched | speedup batched | speedup per layer "
             "| worst energy ratio | fingerprint | cache cold | cache warm |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in r["sets"].items():
        est = "≈" if s["extrapolated"] else ""
        best = "≈" if s["fast_batched_extrapolated"] else ""
        lines.append(
            f"| {name} | {s['layers']} | {est}{fmt_s(s['est_exact_per_layer_total_s'])} s "
            f"| {est}{fmt_s(s['est_fast_per_layer_total_s'])} s | {best}{fmt_s(s['fast_batched_total_s'])} s "
            f"| {fmt_spread(s, 'speedup_batched')} | {fmt_spread(s, 'speedup_per_layer')} "
            f"| {s['worst_energy_ratio']:.4f} ({s['energy_ratio_layers']} layers) "
            f"| {fmt_s(s['fingerprint_s'])}{' s' if s['fingerprint_s'] is not None else ''} "
            f"| {fmt_s(s['cache_cold_s'])}{' s' if s['cache_cold_s'] is not None else ''} "
            f"| {fmt_s(s['cache_warm_s'])}{' s' if s['cache_warm_s'] is not None else ''} |")
    lines += ["", "≈: extrapolated by count from the sampled layers of each shape (their median over the pairs × count)."]
    if any(s.get("cpu_time") for s in r["sets"].values()):
        lines += ["", "Process CPU time (all threads; also inflated by other load: OpenMP threads spin while descheduled):", "",
                  "| set | exact per layer | fast per layer | fast batched | speedup batched | speedup per layer |",
                  "|---|---|---|---|---|---|"]
        for name, s in r["sets"].items():
            c = s.get("cpu_time")
            if c:
                lines.append(f"| {name} | {fmt_s(c['est_exact_per_layer_total_s'])} s "
                             f"| {fmt_s(c['est_fast_per_layer_total_s'])} s | {fmt_s(c['fast_batched_total_s'])} s "
                             f"| {c['speedup_batched']:.1f}× | {c['speedup_per_layer']:.1f}× |")
    lines += ["",
              "| set | shape | count | sampled | exact s/layer (median) | fast s/layer (median) | worst energy ratio |",
              "|---|---|---|---|---|---|---|"]
    for name, s in r["sets"].items():
        for shp, p in s["per_shape"].items():
            lines.append(f"| {name} | {shp} | {p['count']} | {p['sampled']} | {median(p['exact_s']):.4f} "
                         f"| {median(p['fast_s']):.4f} | {min(p['energy_ratio']):.5f} |")
    if r.get("trained"):
        lines += ["", "Trained weights (the shipped world model's `paper` targets; fast with the library's "
                  "adaptive power iterations against exact):", "",
                  "| rank | targets | worst energy ratio | targets below 0.99 | exact | fast |", "|---|---|---|---|---|---|"]
        for t in r["trained"]:
            lines.append(f"| {t['rank']} | {t['targets']} | {t['worst_energy_ratio']:.4f} | {t['below_0.99']} "
                         f"| {fmt_s(t['exact_s'])} s | {fmt_s(t['fast_s'])} s |")
    lines += ["", "## Targets (issue 2)", ""]
    for k, v in r["targets"].items():
        if isinstance(v, dict):
            val = v.get("value")
            extra = ""
            if "per_layer" in v:
                extra = f"; per layer {v['per_layer']:.1f}×"
                if v.get("batched_cpu_time"):
                    extra += (f"; by process CPU time: batched {v['batched_cpu_time']:.1f}×, "
                              f"per layer {v['per_layer_cpu_time']:.1f}×")
            lines.append(f"- `{k}`: {'MET' if v['met'] else 'NOT MET' if v['met'] is False else 'unknown'} "
                         f"(value {val:.4g}, target {v['target']}{extra})" if val is not None else f"- `{k}`: no value")
        else:
            lines.append(f"- `{k}`: {v}")
    if r.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--sets", default="all", help="comma list of sdxl, sd3, flux, flux2, qwen_image (default all)")
    ap.add_argument("--samples-per-shape", type=int, default=None,
                    help="layers timed per distinct shape (default 2 on the CPU, 1 for FLUX there, 4 on a GPU, "
                         "1 with --quick)")
    ap.add_argument("--pairs", type=int, default=None,
                    help="interleaved pairs after the warm-up: every sampled layer by exact and by fast, then the "
                         "batched set once (default 5; 2 with --quick)")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--quick", action="store_true", help="tiny shapes of the same structure (CI smoke)")
    ap.add_argument("--rank", type=int, default=None, help="default 64 (8 with --quick)")
    ap.add_argument("--oversample", type=int, default=None, help="fast: extra probes (default: the library's)")
    ap.add_argument("--power-iters", type=int, default=None, help="fast: power iterations (default: the library's)")
    ap.add_argument("--decay", type=float, default=0.5, help="power-law exponent of the synthetic spectrum")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="storage dtype of the weights")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-weight-gb", type=float, default=None,
                    help="build a set whole only if its weights fit (default: 45%% of free GPU memory; "
                         "on the CPU min(6 GB, 30%% of available RAM))")
    ap.add_argument("--max-batch-mb", type=int, default=None,
                    help="decompose's max_batch_bytes, in MiB (default: the library's: 256 on a GPU, one target at a time on the CPU)")
    ap.add_argument("--cache-sets", default=None,
                    help="sets to run the cache step on (default: all on a GPU, sdxl,sd3 on the CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--note", action="append", default=[], help="free text recorded in the results")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other sets of an existing results file of this machine (replace only those run now)")
    ap.add_argument("--quiet", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but torch sees no CUDA device")
    sets = SETS if a.sets == "all" else tuple(s.strip() for s in a.sets.split(",") if s.strip())
    bad = [s for s in sets if s not in SETS]
    if bad:
        raise SystemExit(f"unknown set(s) {bad}; choose from {', '.join(SETS)}")
    samples = a.samples_per_shape or (1 if a.quick else 4 if device.type == "cuda" else 2)
    rank = a.rank or (8 if a.quick else 64)
    pairs = a.pairs or (2 if a.quick else 5)
    lib = DecomposeSettings()
    oversample = lib.oversample if a.oversample is None else a.oversample
    power_iters = lib.power_iters if a.power_iters is None else a.power_iters
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    if a.cache_sets is None:
        cache_sets = set(SETS) if (device.type == "cuda" or a.quick) else {"sdxl", "sd3"}
    else:
        cache_sets = {s.strip() for s in a.cache_sets.split(",")}
    budget = int(a.max_weight_gb * 2**30) if a.max_weight_gb is not None else default_budget(device)
    log = (lambda *x: None) if a.quiet else (lambda msg: print(msg, flush=True))

    info = machine_info(device)
    results = {
        "benchmark": "qr-lora decompose", "quick": a.quick,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": info, "loadavg_start": loadavg(),
        "settings": {"rank": rank, "oversample": oversample, "power_iters": power_iters,
                     "decay": a.decay, "dtype": a.dtype,
                     "samples_per_shape": samples, "pairs": pairs, "max_batch_mb": a.max_batch_mb,
                     "weight_budget_GiB": round(budget / 2**30, 2), "seed": a.seed,
                     "weights_on": str(device), "cache_sets": sorted(cache_sets & set(sets))},
        "method": ("exact = decompose(method='exact') one target at a time (full fp32 torch.linalg.svd + QR, "
                   "the paper's way); fast per layer = decompose(method='fast') one target at a time; fast batched "
                   "= decompose(method='fast') on the whole set (extrapolated from the sampled layers when the set "
                   "is not built whole). The three run interleaved, --pairs pairs after a warm-up; est_* totals = per pair, "
                   "the sampled layers' mean of each shape x count, then the median over pairs; speedups = median "
                   "(with min and max) of the per-pair ratios. "
                   "worst_energy_ratio = min over sampled layers of ||Q_fast^T W||^2 / sum(exact top-r sigma^2), "
                   "per-layer and batched Q; worst_energy_ratio_batched_vs_nominal = the batched Q of every "
                   "built layer against the synthetic spectrum's top-r energy. cache_warm_s = second get_basis "
                   "call into a fresh BasisCache (fingerprint + load + validation against live weights)."),
        "sets": {}, "notes": list(a.note),
    }
    opts = Options(device, dtype, rank, oversample, power_iters, samples, pairs, a.decay, a.seed, budget, None if a.max_batch_mb is None else a.max_batch_mb * 2**20, True, log)
    shape_fns = QUICK if a.quick else FULL
    t_all = time.perf_counter()
    for name in sets:
        opts.cache = name in cache_sets
        # FLUX's exact SVDs take ~45 s per sampled layer on 2 CPU cores: one layer per shape keeps the whole
        # CPU run under 10 minutes with 5 pairs.
        opts.samples = 1 if (name in ("flux", "flux2", "qwen_image") and device.type == "cpu"
                             and a.samples_per_shape is None and not a.quick) else samples
        results["sets"][name] = run_set(name, shape_fns[name](), opts)
    if not a.quick:
        log("trained weights (the shipped world model)")
        results["trained"] = trained_weight_rows(device, a.seed)
    results["wall_s"] = time.perf_counter() - t_all
    results["loadavg_end"] = loadavg()
    results["targets"] = check_targets(results, device)
    if a.quick:
        results["notes"].append("quick smoke run: tiny shapes of the same structure; times mean nothing")

    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"decompose-{info['slug']}{'-quick' if a.quick else ''}"
    old = out / f"{stem}.json"
    if a.merge and old.exists():
        prev = json.loads(old.read_text())
        for k in ("rank", "oversample", "power_iters", "decay", "dtype"):
            if prev.get("settings", {}).get(k) != results["settings"][k]:
                raise SystemExit(f"--merge: {old} has {k} = {prev.get('settings', {}).get(k)!r}, this run "
                                 f"{results['settings'][k]!r}; results of different settings are not merged")
        merged = {k: v for k, v in prev.get("sets", {}).items() if k not in results["sets"]}
        merged.update(results["sets"])
        results["sets"] = {k: merged[k] for k in SETS if k in merged}
        results["merged_from_previous_run"] = {k: prev.get("date_utc") for k in merged if k not in sets}
        results["notes"] = list(dict.fromkeys(prev.get("notes", []) + results["notes"]))
        results["targets"] = check_targets(results, device)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(results))
    results["files"] = [str(out / f"{stem}.json"), str(out / f"{stem}.md")]
    log(markdown(results))
    log(f"wrote {results['files'][0]} and .md")
    return results


if __name__ == "__main__":
    main()
