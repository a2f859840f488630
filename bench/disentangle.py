"""The paper's disentanglement experiment on the procedural world, as trade-off curves over the merge strengths.

For each held-out (content shape <c>, style <s>) pair and seed: train a content adapter on one image
("a <c>", <c> painted in a seen style) and a style adapter on one image ("a <shape> in <s> style"), for

  (a) QR-LoRA ΔR: W + Q(λc·ΔR_c + λs·ΔR_s), Q from one shared decomposition of the base weights;
  (b) ordinary LoRA of the same rank, trained by the same loop (the paper's DB-LoRA baseline);

then merge the two with every entry of the merge-mode table (`qr_core.world.merges.merge_modes`: name -> family
of adapters and a function (pair, content, style, λc, λs) -> the model to sample, and for modes that change
along sampling, the model per step) at every (λc, λs) of a grid, and sample "a <c> in <s> style".

Scores (`qr_core.world.encoder.Scorer`): content_sim / style_sim = cosine of the world encoder's content /
style features to the content / style reference (the DINO / CLIP-I analogue); p_shape / p_style = the
encoder's probability that the image shows <c> / is in style <s> (ground truth the world provides);
mask_iou = overlap of the sample's foreground with the content reference's shape mask.

The front of a mode: for each threshold τ, the best mean P(shape) among its grid points whose mean
P(style) ≥ τ (0 where none reaches τ); likewise content_sim against style_sim. Intervals: percentile
bootstrap over the pairs × seeds (each resample shared by all modes, so differences are paired). A mode
wins at τ only where its front minus plain LoRA addition's has a 95 % interval above 0.

Choices (which λ schedule and which block profile a mode uses) are made on separate selection pairs, never
on the reported ones. Matrix statistics: per-target cosine between the content and style adapters.

    python bench/disentangle.py               # the full run, writes bench/results/disentangle.{md,json} + PNGs
    python bench/disentangle.py --quick       # < 60 s smoke run (CI), writes to --out
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from qr_core.bases.cache import get_basis
from qr_core.bases.decompose import DecomposeSettings
from qr_core.machine import describe_machine
from qr_core.targets import select_targets
from qr_core.training.loop import TrainSettings
from qr_core.world import scenes
from qr_core.world.encoder import Scorer, load_encoder
from qr_core.world.model import ASSET, load_world_model
from qr_core.world.merges import (BLOCK_PROFILES, LORA, QR, PairRun, Patch, add_merge, blocks_merge, merge_modes,
                                  schedule_merge)
from qr_core.world.tasks import Task, content_task, merged_prompt, sample_images, style_task, train_lora, train_qr

PAIRS = [("heart", "tiger", "sketch", "circle"), ("star", "neon", "crimson", "square"),
         ("arrow", "candy", "mint", "bar"), ("heart", "neon", "ocean", "diamond")]
GRID = (0.5, 0.75, 1.0, 1.25)  # λc and λs
METRICS = ("content_sim", "style_sim", "p_shape", "p_style", "mask_iou")
# λ over steps and λ per block are chosen on these pairs, none of them a reported pair (no tuning on PAIRS).
SELECT_PAIRS = [("star", "tiger", "mint", "diamond"), ("arrow", "neon", "sketch", "square"),
                ("heart", "candy", "ocean", "bar")]
SELECT_POSE_OFFSET = 100
SCHEDULES = ("style-late", "content-early", "content-early-style-late", "crossfade", "style-early-content-late")
PLAN_METHODS = (QR, LORA)  # a schedule or profile scales ΔW = QΔR or BA per step / per block alike
BASELINE = "LoRA addition"
FRONTS = {"p": ("p_style", "p_shape", (0.5, 0.6, 0.7, 0.8, 0.9)),
          "sim": ("style_sim", "content_sim", (0.6, 0.7, 0.8, 0.9))}
BOOTSTRAP = 2000


# ---- selection of the λ schedule and block profile ---------------------------------------------------------

def selection_score(s: dict) -> float:
    """What a plan is chosen by: both ground truths at once, the mean of P(shape) and P(style)."""
    return (s["p_shape"] + s["p_style"]) / 2


def candidate_plans() -> list[tuple[str, str]]:
    return [("plain", "")] + [("schedule", n) for n in SCHEDULES] + [("blocks", n) for n in BLOCK_PROFILES]


def plan_patch(p: PairRun, family: str, kind: str, name: str) -> Patch:
    c, s = p.adapters[family]
    if kind == "schedule":
        return schedule_merge(p, c, s, 1.0, 1.0, name)
    if kind == "blocks":
        return blocks_merge(p, c, s, 1.0, 1.0, name)
    return add_merge(p, c, s, 1.0, 1.0)


def train_pair(model, basis, targets, ct: Task, st: Task, args, seed: int, families) -> dict:
    ts = TrainSettings(steps=args.steps, lr=args.lr, seed=seed)
    out = {}
    for family in families:
        if family == LORA:
            out[family] = (train_lora(model, targets, args.rank, ct, ts, data_seed=seed),
                           train_lora(model, targets, args.rank, st, ts, data_seed=seed + 1))
        else:
            tri = family.endswith("triangular")
            out[family] = (train_qr(model, basis, ct, ts, data_seed=seed, triangular=tri),
                           train_qr(model, basis, st, ts, data_seed=seed + 1, triangular=tri))
    return out


def select_plans(model, basis, targets, scorer, args) -> dict:
    """Score every candidate plan at (1, 1) on SELECT_PAIRS; the best schedule and block profile per family."""
    rows = []
    for c_shape, s_style, ref_style, ref_shape in SELECT_PAIRS[: args.select_pairs]:
        for seed in range(args.select_seeds):
            # other poses and sampling noise than the reported runs too: only the held-out vocabulary is shared
            pose = SELECT_POSE_OFFSET + seed
            ct, st = content_task(c_shape, ref_style, pose_seed=pose), style_task(s_style, ref_shape, pose_seed=pose)
            p = PairRun(model, targets, ct, st, train_pair(model, basis, targets, ct, st, args, pose, PLAN_METHODS), pose)
            prompt = merged_prompt(ct, st)
            for family in PLAN_METHODS:
                for kind, name in candidate_plans():
                    m, at = plan_patch(p, family, kind, name)
                    imgs = sample_images(m, prompt, args.samples, seed=1000 + pose, steps=args.sample_steps, model_at=at)
                    s = scorer.score(imgs, ct.image, st.image, c_shape, s_style)
                    rows.append({"pair": f"{c_shape}+{s_style}/seed{seed}", "method": family, "kind": kind,
                                 "plan": name, "selection_score": selection_score(s), **s})
            print(f"[selection {c_shape}+{s_style}/seed{seed}] scored {len(candidate_plans())} plans per family",
                  flush=True)
    table = {}
    for r in rows:
        table.setdefault((r["method"], r["kind"], r["plan"]), []).append(r)
    summary = [{"method": m, "kind": k, "plan": p, **{x: statistics.fmean(r[x] for r in v)
                                                       for x in ("selection_score", "p_shape", "p_style")}}
               for (m, k, p), v in table.items()]
    best = {m: {k: max((r for r in summary if r["method"] == m and r["kind"] == k),
                       key=lambda r: r["selection_score"])["plan"] for k in ("schedule", "blocks")}
            for m in PLAN_METHODS}
    return {"rows": rows, "summary": summary, "best": best, "pairs": [list(p) for p in SELECT_PAIRS[: args.select_pairs]],
            "seeds": args.select_seeds}


# ---- scores -----------------------------------------------------------------------------------------------

def fg_mask(images: torch.Tensor) -> torch.Tensor:
    """Foreground estimate: pixels whose colour differs from the image's border median by > 0.35 (L2, [-1,1])."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], -1)
    bg = border.median(-1).values[..., None, None]
    return (images - bg).norm(dim=1) > 0.35


def mask_iou(images: torch.Tensor, ref_mask: torch.Tensor) -> float:
    m = fg_mask(images)
    r = (ref_mask > 0.5)[None]
    return float(((m & r).flatten(1).sum(1) / (m | r).flatten(1).sum(1).clamp(min=1)).mean())


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    d = a.norm() * b.norm()
    return float(a @ b / d) if d > 0 else 0.0


def mean_std(xs):
    xs = [x for x in xs if x == x]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


# ---- fronts and their bootstrap ----------------------------------------------------------------------------

def front_values(style: np.ndarray, shape: np.ndarray, taus) -> np.ndarray:
    """[..., cells] mean scores -> [..., len(taus)]: the best `shape` among cells with `style` ≥ τ (0 if none)."""
    out = [np.where(style >= t, shape, 0.0).max(-1) for t in taus]
    return np.stack(out, -1)


def fronts(sweep: list[dict], modes: list[str], grid_cells, units: list[str], taus_for=FRONTS,
           n_boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Per front kind and mode: the front at each τ with its bootstrap interval, and its difference to
    BASELINE's (paired resamples of the pairs × seeds) with that interval and whether it lies above 0."""
    index = {(r["mode"], r["unit"], r["lc"], r["ls"]): r for r in sweep}
    rng = np.random.default_rng(seed)
    boot = rng.integers(len(units), size=(n_boot, len(units)))
    out = {}
    for kind, (x_key, y_key, taus) in taus_for.items():
        res, draws = {}, {}
        for m in modes:
            x = np.array([[index[(m, u, lc, ls)][x_key] for lc, ls in grid_cells] for u in units])  # [U, C]
            y = np.array([[index[(m, u, lc, ls)][y_key] for lc, ls in grid_cells] for u in units])
            point = front_values(x.mean(0), y.mean(0), taus)
            draws[m] = front_values(x[boot].mean(1), y[boot].mean(1), taus)  # [B, T]
            lo, hi = np.percentile(draws[m], [2.5, 97.5], axis=0)
            res[m] = {"taus": list(taus), "front": point.tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
                      "points": {"x": x.mean(0).tolist(), "y": y.mean(0).tolist()}}
        for m in modes:
            d = draws[m] - draws[BASELINE] if BASELINE in draws else None
            if d is not None and m != BASELINE:
                lo, hi = np.percentile(d, [2.5, 97.5], axis=0)
                point = np.array(res[m]["front"]) - np.array(res[BASELINE]["front"])
                res[m]["vs_baseline"] = {"diff": point.tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
                                         "wins": [bool(v > 0) for v in lo], "losses": [bool(v < 0) for v in hi]}
        out[kind] = res
    return out


def plot_fronts(res: dict, path: Path, grid_cells) -> bool:
    """The two fronts per mode (P(shape) vs P(style); content vs style similarity) with bootstrap bands."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # a bench-only dependency: pip install -e ".[bench]"
        print("matplotlib is not installed (pip install -e \".[bench]\"): no front plot", flush=True)
        return False
    titles = {"p": ("P(style = <s>)", "P(shape = <c>)"), "sim": ("style similarity", "content similarity")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, (kind, (x_key, y_key, _)) in zip(axes, FRONTS.items()):
        fr = res["fronts"][kind]
        xs_all = np.concatenate([np.array(v["points"]["x"]) for v in fr.values()])
        taus = np.linspace(max(0.0, xs_all.min() - 0.02), min(1.0, xs_all.max()), 60)
        for i, (m, v) in enumerate(fr.items()):
            col = f"C{i}"
            px, py = np.array(v["points"]["x"]), np.array(v["points"]["y"])
            ax.scatter(px, py, s=10, color=col, alpha=0.45)
            line = front_values(px, py, taus)
            lw = 2.6 if m == BASELINE else 1.6
            ax.step(taus, line, where="post", color=col, lw=lw, label=m.replace("⟂", "orth."))  # not in DejaVu
            if m == BASELINE:  # one band keeps the plot readable; every mode's interval is in the tables
                band = res["front_bands"][kind][m]
                ax.fill_between(taus, band["lo"], band["hi"], step="post", color=col, alpha=0.18,
                                label=f"{m}: 95 % bootstrap band")
        ax.set_xlabel(f"{titles[kind][0]} (at least)")
        ax.set_ylabel(f"best {titles[kind][1]}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Merge fronts on the world: each dot one (λc, λs), mean over pairs × seeds; the line: the best "
                 "score reached at each threshold", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def front_bands(sweep, modes, grid_cells, units, fr: dict, n_boot: int = 500, seed: int = 1) -> dict:
    """The bootstrap band of each front on the plot's fine τ axis."""
    bands = {}
    for kind, (x_key, y_key, _) in FRONTS.items():
        xs_all = np.concatenate([np.array(v["points"]["x"]) for v in fr[kind].values()])
        taus = np.linspace(max(0.0, xs_all.min() - 0.02), min(1.0, xs_all.max()), 60)
        sub = fronts(sweep, modes, grid_cells, units, {kind: (x_key, y_key, tuple(taus))}, n_boot, seed)[kind]
        bands[kind] = {m: {"lo": v["lo"], "hi": v["hi"]} for m, v in sub.items()}
    return bands


# ---- the run --------------------------------------------------------------------------------------------

class Partial:
    """Each measured pair × seed appended to a JSON-lines file as it finishes (the first one's sample images
    beside it), so an interrupted run resumes where it stopped and --report-only reports what is done."""

    def __init__(self, path: Path):
        self.path, self.image_path = path, path.with_suffix(".images.safetensors")
        self.done = {}
        if path.exists():
            for line in path.read_text().splitlines():
                rec = json.loads(line)
                self.done[rec["unit"]] = rec

    def add(self, unit: str, rec: dict, images: dict | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if images:
            from safetensors.torch import save_file

            save_file({f"{m}|{lc}|{ls}": v.contiguous() for (m, lc, ls), v in images.items()}, str(self.image_path))
        with self.path.open("a") as f:
            f.write(json.dumps({"unit": unit, **rec}, default=str) + "\n")

    def images(self) -> dict:
        from safetensors.torch import load_file

        if not self.image_path.exists():
            return {}
        out = {}
        for k, v in load_file(str(self.image_path)).items():
            m, lc, ls = k.rsplit("|", 2)
            out[(m, float(lc), float(ls))] = v
        return out

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.image_path.unlink(missing_ok=True)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model, meta = load_world_model(args.model)
    scorer = Scorer(load_encoder())
    weights = dict(model.state_dict())
    targets = select_targets({k: v.shape for k, v in weights.items()}, "paper")
    t0 = time.perf_counter()
    basis = get_basis(weights.__getitem__, targets, DecomposeSettings(rank=args.qr_rank or args.rank, method="exact"),
                      None)
    decompose_s = time.perf_counter() - t0
    selection = select_plans(model, basis, targets, scorer, args) if args.plans else None
    best = selection["best"] if selection else None
    if args.chosen:  # choices made on the selection pairs by an earlier run (args.chosen_from says which)
        schedule, blocks = args.chosen
        best = {f: {"schedule": schedule, "blocks": blocks} for f in PLAN_METHODS}
    modes = merge_modes(best, args.zip_steps, args.triangular)
    if args.only:
        modes = {n: m for n, m in modes.items() if n == BASELINE or any(o in n for o in args.only)}
    if BASELINE not in modes:
        raise SystemExit(f"the merge-mode table lacks the baseline {BASELINE!r}")
    families = list(dict.fromkeys([QR, LORA] + [m.family for m in modes.values()]))
    grid_cells = [(lc, ls) for lc in args.grid for ls in args.grid]
    rows, sweep, mats, qmats, images, curves, units, params = [], [], [], [], {}, {}, [], {}
    partial = Partial(Path(args.out) / f"{args.prefix}.partial.jsonl")
    pairs = PAIRS[: args.pairs]
    for pi, (c_shape, s_style, ref_style, ref_shape) in enumerate(pairs):
        for seed in range(args.seeds):
            label = f"{c_shape}+{s_style}/seed{seed}"
            if label in partial.done:  # measured by an earlier, interrupted run with the same arguments
                rec = partial.done[label]
                rows += rec["rows"]
                sweep += rec["sweep"]
                mats += rec["mats"]
                qmats += rec["qmats"]
                curves.update(rec["curves"])
                params = rec["params"]
                images.update(partial.images() if pi == 0 and seed == 0 else {})
                units.append(label)
                continue
            if args.report_only:
                continue
            start = {"rows": len(rows), "sweep": len(sweep), "mats": len(mats), "qmats": len(qmats)}
            ct = content_task(c_shape, ref_style, pose_seed=seed)
            st = style_task(s_style, ref_shape, pose_seed=seed)
            prompt = merged_prompt(ct, st)
            p = PairRun(model, targets, ct, st, train_pair(model, basis, targets, ct, st, args, seed, families), seed)
            _, cref_mask = scenes.render(ct.shape, ct.style, ct.pose, with_mask=True)
            units.append(label)
            print(f"[{label}] trained in " + ", ".join(
                f"{m}: {a.seconds:.0f}+{b.seconds:.0f} s" for m, (a, b) in p.adapters.items()), flush=True)

            def score(m, at=None):
                imgs = sample_images(m, prompt, args.samples, seed=1000 + seed, steps=args.sample_steps, model_at=at)
                s = scorer.score(imgs, ct.image, st.image, c_shape, s_style)
                s["mask_iou"] = mask_iou(imgs, cref_mask)
                return s, imgs

            rows.append({"pair": label, "method": "base model (no adapter)", **score(model)[0]})
            for family in families:
                c, s = p.adapters[family]
                for what, lams in (("content only", (1, 0)), ("style only", (0, 1))):
                    rows.append({"pair": label, "method": f"{family} {what}",
                                 **score(add_merge(p, c, s, *lams)[0])[0]})
                if seed == 0:
                    curves[f"{label} {family}"] = {"content": c.losses, "style": s.losses}
            t1 = time.perf_counter()
            for name, mode in modes.items():
                for lc, ls in grid_cells:
                    sc, imgs = score(*mode(p, lc, ls))
                    sweep.append({"unit": label, "mode": name, "lc": lc, "ls": ls, **sc})
                    if pi == 0 and seed == 0:
                        images[(name, lc, ls)] = imgs[0]
            print(f"[{label}] swept {len(modes)} modes × {len(grid_cells)} (λc, λs) in {time.perf_counter() - t1:.0f} s",
                  flush=True)
            # matrix statistics (paper Fig. 2 / Table 4)
            qc, qs = p.adapters[QR]
            lc_, ls_ = p.adapters[LORA]
            for i, t in enumerate(targets):
                mats.append({"pair": label, "target": t.name,
                             "ΔR_c vs ΔR_s": cos(qc.delta.delta[t.name], qs.delta.delta[t.name]),
                             "QR ΔW_c vs ΔW_s": cos(qc.updates[t.name], qs.updates[t.name]),
                             "LoRA A_c vs A_s": cos(lc_.lora.down[i].detach(), ls_.lora.down[i].detach()),
                             "LoRA B_c vs B_s": cos(lc_.lora.up[i].detach(), ls_.lora.up[i].detach()),
                             "LoRA ΔW_c vs ΔW_s": cos(lc_.updates[t.name], ls_.updates[t.name])})
            if args.qr_mode and pi == 0 and seed == 0:
                # paper Fig. 2 / §4.3: train Q and R together for each task; are the two trained Q alike?
                ts = TrainSettings(steps=args.steps, lr=args.lr, seed=seed)
                qq = [train_qr(model, basis, t, ts, data_seed=seed + k, mode="qr") for k, t in enumerate((ct, st))]
                for t in targets:
                    qmats.append({"target": t.name, "Q_c vs Q_s (Q+R runs)": cos(qq[0].extra["q"][t.name],
                                                                                 qq[1].extra["q"][t.name]),
                                  "Q_c vs Q₀": cos(qq[0].extra["q"][t.name], basis.q[t.name]),
                                  "Q_s vs Q₀": cos(qq[1].extra["q"][t.name], basis.q[t.name])})
            params = {m: a.params for m, (a, _) in p.adapters.items()}
            partial.add(label, {"rows": rows[start["rows"]:], "sweep": sweep[start["sweep"]:],
                                "mats": mats[start["mats"]:], "qmats": qmats[start["qmats"]:],
                                "curves": {k: v for k, v in curves.items() if k.startswith(label)}, "params": params},
                        images if pi == 0 and seed == 0 else None)
    if not units:
        raise SystemExit("no pair × seed measured yet: nothing to report")
    for name in modes:  # the Table 1 analogue: every mode at (1, 1)
        rows += [{"pair": r["unit"], "method": f"{name} at (1, 1)", **{k: r[k] for k in METRICS}}
                 for r in sweep if r["mode"] == name and r["lc"] == 1.0 and r["ls"] == 1.0]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = {m: {k: mean_std([r[k] for r in rows if r["method"] == m]) for k in METRICS} for m in methods}
    mat_keys = [k for k in mats[0] if k not in ("pair", "target")]
    mat_table = {k: {"mean": mean_std([abs(r[k]) for r in mats])[0], "max": max(abs(r[k]) for r in mats)}
                 for k in mat_keys}
    for k in (qmats[0] if qmats else {}):
        if k != "target":
            mat_table[k + ", first pair, seed 0"] = {"mean": mean_std([abs(r[k]) for r in qmats])[0],
                                                    "max": max(abs(r[k]) for r in qmats)}
    fr = fronts(sweep, list(modes), grid_cells, units)
    return {"table": table, "rows": rows, "sweep": sweep, "selection": selection, "fronts": fr,
            "front_bands": front_bands(sweep, list(modes), grid_cells, units, fr),
            "modes": {n: {"family": m.family, "note": m.note} for n, m in modes.items()},
            "grid": list(args.grid), "units": units, "matrix": mat_table, "matrix_rows": mats, "q_rows": qmats,
            "images": images, "curves": curves, "params": params, "decompose_seconds": decompose_s,
            "targets": len(targets), "model_meta": meta, "pairs": [list(p) for p in pairs]}


# ---- output -----------------------------------------------------------------------------------------------

def write_grid(images: dict, modes: list[str], grid: tuple, path: Path) -> None:
    """One row per merge mode: the first pair's first sample at each (λc, λs), λc major."""
    rows = [torch.stack([images[(m, lc, ls)] for lc in grid for ls in grid]) for m in modes]
    scenes.labeled_rows(rows, modes, scale=3, label_width=250).save(path)


def fmt(ms) -> str:
    m, s = ms
    return f"{m:.3f} ± {s:.3f}"


def ci(v: dict, i: int, sign: bool = False) -> str:
    f = "{:+.2f}" if sign else "{:.2f}"
    return f"{f.format(v['front' if not sign else 'diff'][i])} [{f.format(v['lo'][i])}, {f.format(v['hi'][i])}]"


def front_markdown(res: dict) -> list[str]:
    L = []
    for kind, (x_key, y_key, taus) in FRONTS.items():
        fr = res["fronts"][kind]
        L += ["", f"### Front: best mean {y_key} at {x_key} ≥ τ (95 % bootstrap interval over pairs × seeds)", "",
              "| merge mode | " + " | ".join(f"τ = {t}" for t in taus) + " |", "|---|" + "---|" * len(taus)]
        for m, v in fr.items():
            L.append(f"| {m} | " + " | ".join(ci(v, i) for i in range(len(taus))) + " |")
        L += ["", f"Minus {BASELINE} (paired bootstrap; **win** where the interval lies above 0, *loss* below):", "",
              "| merge mode | " + " | ".join(f"τ = {t}" for t in taus) + " |", "|---|" + "---|" * len(taus)]
        for m, v in fr.items():
            d = v.get("vs_baseline")
            if d:
                cells = [ci(d, i, sign=True) + (" **win**" if d["wins"][i] else " *loss*" if d["losses"][i] else "")
                         for i in range(len(taus))]
                L.append(f"| {m} | " + " | ".join(cells) + " |")
    return L


def plan_markdown(res: dict) -> list[str]:
    sel = res.get("selection")
    if not sel:
        return []
    L = ["", "## Choosing λ over steps and λ per block (selection pairs only)", "",
         "Every candidate — plain addition, the schedules " + ", ".join(SCHEDULES)
         + " (`qr_core/merging/lambda_schedule.py`; factors of λc = λs = 1 over the sampling progress) and the block "
         "profiles " + "; ".join(f"{n} (content '{c}', style '{s}')" for n, (c, s) in BLOCK_PROFILES.items())
         + f" — was scored at (1, 1) on the selection pairs {'; '.join(', '.join(p[:2]) for p in sel['pairs'])} "
         f"(pose and noise seeds {SELECT_POSE_OFFSET}–{SELECT_POSE_OFFSET + sel['seeds'] - 1}; the reported runs use "
         "0–1), with adapters trained there by the same settings. Per family, the schedule and the profile with the "
         "highest mean of P(shape) and P(style) became the merge modes '… λ over steps: …' and '… λ per block: …'.", "",
         "| family | plan | selection score | p_shape | p_style |", "|---|---|---|---|---|"]
    for r in sel["summary"]:
        chosen = " (chosen)" if r["kind"] != "plain" and sel["best"][r["method"]][r["kind"]] == r["plan"] else ""
        L.append(f"| {r['method']} | {r['kind']}{': ' + r['plan'] if r['plan'] else ''}{chosen} | "
                 f"{r['selection_score']:.3f} | {r['p_shape']:.3f} | {r['p_style']:.3f} |")
    return L


def write_markdown(res: dict, args, path: Path, command: str) -> None:
    meta = res["model_meta"]
    L = ["# Disentanglement on the procedural world: merge fronts (QR-LoRA ΔR, LoRA, and their merge modes)", "",
         f"Command: `{command}`  ", f"Machine: {describe_machine()}{'; ' + args.note if args.note else ''}  ",
         f"Wall time: {res['wall_seconds']:.0f} s.  ",
         f"Base model: `{Path(args.model).name}` (steps {meta.get('steps')}, seed {meta.get('seed')}; "
         f"trained by `{meta.get('command', '?')}`)  ",
         f"Setting: rank {args.rank} on the {res['targets']} 'paper' targets, {args.steps} steps at LR {args.lr} "
         f"(AdamW, one image, 4 noise draws per step), {args.samples} samples × {args.sample_steps} Euler steps "
         f"with CFG 3 per cell; pairs {args.pairs} × seeds {args.seeds}; (λc, λs) grid {tuple(args.grid)}².  ",
         f"Measured: {len(res['units'])} of the {args.pairs * args.seeds} pairs × seeds ({', '.join(res['units'])})"
         + (" — an interrupted run, reported with --report-only." if len(res["units"]) < args.pairs * args.seeds
            else ".") + "  ",
         "Trainable parameters per adapter: " + ", ".join(f"{m} {n:,}" for m, n in res["params"].items())
         + f". One-off decomposition: {res['decompose_seconds']:.2f} s.", "",
         "Pairs (content shape, style, content reference's style, style reference's shape): "
         + "; ".join(", ".join(p) for p in res["pairs"]), "",
         "Merge modes (the table in `qr_core/world/merges.py`): " + "; ".join(
             f"**{n}** ({v['family']}{', ' + v['note'] if v['note'] else ''})" for n, v in res["modes"].items()) + ".",
         "", "## Fronts", "",
         "For each mode and threshold τ: the best mean score among its (λc, λs) grid points whose mean other score "
         "reaches τ (0 where none does). Intervals: percentile bootstrap, "
         f"{BOOTSTRAP} resamples of the {len(res['units'])} pairs × seeds, shared by all modes.", "",
         f"![fronts]({args.prefix}_fronts.png)"]
    L += front_markdown(res)
    L += ["", "## At (λc, λs) = (1, 1) (Table 1 analogue; mean ± std over pairs × seeds)", "",
          "content_sim / style_sim: cosine of the world encoder's content / style features to the content / style "
          "reference (DINO / CLIP-I analogue). p_shape / p_style: encoder probability of the true <c> / <s> "
          "(ground truth). mask_iou: foreground overlap with the content reference's shape. Higher is better for all.", "",
          "| method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for m, v in res["table"].items():
        L.append(f"| {m} | " + " | ".join(fmt(v[k]) for k in METRICS) + " |")
    L += plan_markdown(res)
    if args.chosen:
        L += ["", f"λ over steps `{args.chosen[0]}` and λ per block `{args.chosen[1]}`: chosen on the selection pairs "
              f"(never the reported ones) by an earlier run on the same model, {args.chosen_from or '(not recorded)'}."]
    L += ["", "## Matrix statistics (paper Fig. 2 / Table 4): |cosine| between the content and style adapters, "
          "per target", "", "| pair of matrices | mean over targets × runs | max |", "|---|---|---|"]
    for k, v in res["matrix"].items():
        L.append(f"| {k} | {v['mean']:.4f} | {v['max']:.4f} |")
    L += ["", "## Every grid point (mean over pairs × seeds)", "",
          "| mode | λc | λs | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS)]
    cells = {}
    for r in res["sweep"]:
        cells.setdefault((r["mode"], r["lc"], r["ls"]), []).append(r)
    for (m, lc, ls), v in cells.items():
        L.append(f"| {m} | {lc} | {ls} | " + " | ".join(f"{statistics.fmean(r[k] for r in v):.3f}" for k in METRICS)
                 + " |")
    L += ["", f"![samples]({args.prefix}_grid.png)", "",
          f"`{args.prefix}_grid.png`: first pair, seed 0, first sample; one row per merge mode, columns (λc, λs) "
          f"over the grid {tuple(args.grid)}, λc major (λc = {args.grid[0]} for the first {len(args.grid)} columns).", ""]
    path.write_text("\n".join(L))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ASSET))
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--qr-rank", type=int, default=0,
                   help="rank of the QR-LoRA basis if not --rank (e.g. 2×rank: as many parameters as the LoRA)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--pairs", type=int, default=len(PAIRS))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--grid", type=float, nargs="+", default=list(GRID), help="λc and λs values (must include 1)")
    p.add_argument("--zip-steps", type=int, default=100, help="ZipLoRA merger steps (0: no ZipLoRA mode)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core VM)")
    p.add_argument("--triangular", action="store_true",
                   help="add the triangular ΔR (the official code's mask in its basis) as a merge mode")
    p.add_argument("--only", nargs="+", default=[],
                   help="sweep only the merge modes whose name contains one of these (plus the baseline)")
    p.add_argument("--no-qr-mode", dest="qr_mode", action="store_false",
                   help="skip the Q+R runs (trained Q similarity) on the first pair")
    p.add_argument("--no-plans", dest="plans", action="store_false",
                   help="skip λ over steps / λ per block (chosen on SELECT_PAIRS)")
    p.add_argument("--chosen", nargs=2, metavar=("SCHEDULE", "PROFILE"),
                   help="with --no-plans: the schedule and block profile an earlier run chose on the selection pairs")
    p.add_argument("--chosen-from", default="", help="where that choice is recorded (written into the results)")
    p.add_argument("--select-pairs", type=int, default=len(SELECT_PAIRS))
    p.add_argument("--select-seeds", type=int, default=1)
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing new: report the pairs × seeds an interrupted run left in <out>/<prefix>.partial.jsonl")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--prefix", default="disentangle")
    p.add_argument("--note", default="", help="free text recorded next to the machine (e.g. load)")
    p.add_argument("--quick", "--tiny", dest="quick", action="store_true",
                   help="smoke run: 1 pair, 2 seeds, 6 steps, 2 samples × 4 Euler steps, grid (0.5, 1)")
    a = p.parse_args(argv)
    if a.quick:
        a.pairs, a.seeds, a.steps, a.samples, a.sample_steps, a.rank, a.zip_steps = 1, 2, 6, 2, 4, 4, 3
        a.select_pairs, a.grid = 1, [0.5, 1.0]
    if 1.0 not in a.grid:
        p.error("--grid must include 1 (the (1, 1) table)")
    argv_list = argv if argv is not None else sys.argv[1:]
    command = "python bench/disentangle.py " + " ".join(shlex.quote(x) for x in argv_list)
    t0 = time.perf_counter()
    res = run(a)
    res["wall_seconds"] = time.perf_counter() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if res["images"]:
        write_grid(res["images"], list(res["modes"]), tuple(a.grid), out / f"{a.prefix}_grid.png")
    res["plotted"] = plot_fronts(res, out / f"{a.prefix}_fronts.png", None)
    write_markdown(res, a, out / f"{a.prefix}.md", command)
    js = {k: v for k, v in res.items() if k != "images"}
    js["command"], js["machine"] = command, describe_machine()
    (out / f"{a.prefix}.json").write_text(json.dumps(js, indent=1, default=str))
    print((out / f"{a.prefix}.md").read_text())
    if len(res["units"]) == a.pairs * a.seeds:
        Partial(out / f"{a.prefix}.partial.jsonl").remove()
    return res


if __name__ == "__main__":
    main()
