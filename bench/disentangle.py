"""The paper's disentanglement experiment (Table 1, Fig. 2/Table 4, Fig. 7) on the procedural world.

For each held-out (content shape <c>, style <s>) pair and seed: train a content adapter on one image
("a <c>", <c> painted in a seen style) and a style adapter on one image ("a <shape> in <s> style"), merge
them by addition and sample "a <c> in <s> style", for

  (a) QR-LoRA ΔR: W + Q(λc·ΔR_c + λs·ΔR_s), Q from one shared decomposition of the base weights;
  (b) ordinary LoRA of the same rank, trained by the same loop, merged as W + λc·B_cA_c + λs·B_sA_s
      (the paper's DB-LoRA baseline);
  (c) ZipLoRA: the same two LoRAs merged with learned per-column coefficients (100 steps, λ = 0.01).

Scores (`qr_core.world.encoder.Scorer`): content_sim / style_sim = cosine of the world encoder's content /
style features to the content / style reference (the DINO / CLIP-I analogue); p_shape / p_style = the
encoder's probability that the image shows <c> / is in style <s> (ground truth the world provides);
mask_iou = overlap of the sample's foreground with the content reference's shape mask.
Matrix statistics: per-target cosine between the content and style adapters (ΔR vs ΔR; LoRA A vs A, B vs B,
and the dense ΔW of both methods). λ ablation: λc, λs ∈ {0.5, 0.75, 1.0}.

    python bench/disentangle.py               # the full run, writes bench/results/disentangle.{md,json,png}
    python bench/disentangle.py --tiny        # < 60 s smoke run (CI), writes to --out
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from qr_core.merging.blocks import parse_block_profile, scaled_updates
from qr_core.bases.cache import get_basis
from qr_core.bases.decompose import DecomposeSettings
from qr_core.machine import describe_machine
from qr_core.merging.lambda_schedule import resolve_schedule
from qr_core.targets import select_targets
from qr_core.training.loop import TrainSettings
from qr_core.world import scenes
from qr_core.world.encoder import Scorer, load_encoder
from qr_core.world.model import ASSET, load_world_model
from qr_core.world.tasks import (content_task, merged_prompt, patched_model, sample_images, scheduled_models,
                                 style_task, train_lora, train_qr, ziplora_merge)

PAIRS = [("heart", "tiger", "sketch", "circle"), ("star", "neon", "crimson", "square"),
         ("arrow", "candy", "mint", "hexagon"), ("heart", "neon", "ocean", "diamond")]
LAMBDAS = (0.5, 0.75, 1.0)
METRICS = ("content_sim", "style_sim", "p_shape", "p_style", "mask_iou")
# λ over steps and λ per block are chosen on these pairs, none of them a reported pair (no tuning on PAIRS).
SELECT_PAIRS = [("star", "tiger", "mint", "diamond"), ("arrow", "neon", "sketch", "square"),
                ("heart", "candy", "ocean", "hexagon")]
SELECT_POSE_OFFSET = 100
SCHEDULES = ("style-late", "content-early", "content-early-style-late", "crossfade", "style-early-content-late")
BLOCK_PROFILES = {  # name: (content profile, style profile) over the world's FLUX-layout blocks (2 double, 2 single)
    "content double, style single": ("single=0", "double=0"),
    "content double only": ("single=0", ""),
    "style single only": ("", "double=0"),
    "content single, style double": ("double=0", "single=0"),
    "double: content 1.5, style 0.5": ("double=1.5", "double=0.5"),
}
PLAN_METHODS = ("QR-LoRA ΔR", "LoRA")  # a schedule or profile scales ΔW = QΔR or BA per step / per block alike


def selection_score(s: dict) -> float:
    """What a plan is chosen by: both ground truths at once, the mean of P(shape) and P(style)."""
    return (s["p_shape"] + s["p_style"]) / 2


def plan_models(model, targets, content: dict, style: dict, kind: str, name: str):
    """(model, model_at) sampling the merge λc = λs = 1 under a plain, scheduled or per-block plan."""
    if kind == "schedule":
        return model, scheduled_models(model, targets, content, style, 1.0, 1.0, resolve_schedule(name))
    if kind == "blocks":
        cp, sp = (parse_block_profile(p, targets.arch) for p in BLOCK_PROFILES[name])
        content, style = scaled_updates(content, targets, cp), scaled_updates(style, targets, sp)
    return patched_model(model, targets, [(content, 1.0), (style, 1.0)]), None


def candidate_plans() -> list[tuple[str, str]]:
    return [("plain", "")] + [("schedule", n) for n in SCHEDULES] + [("blocks", n) for n in BLOCK_PROFILES]


def select_plans(model, basis, targets, scorer, args) -> dict:
    """Score every candidate plan on SELECT_PAIRS; the best schedule and block profile per method by selection_score."""
    rows = []
    for c_shape, s_style, ref_style, ref_shape in SELECT_PAIRS[: args.select_pairs]:
        for seed in range(args.select_seeds):
            # other poses and sampling noise than the reported runs too: only the held-out vocabulary is shared
            pose = SELECT_POSE_OFFSET + seed
            ct, st = content_task(c_shape, ref_style, pose_seed=pose), style_task(s_style, ref_shape, pose_seed=pose)
            ts_seed = TrainSettings(steps=args.steps, lr=args.lr, seed=pose)
            trained = {"QR-LoRA ΔR": (train_qr(model, basis, ct, ts_seed, data_seed=pose),
                                      train_qr(model, basis, st, ts_seed, data_seed=pose + 1)),
                       "LoRA": (train_lora(model, targets, args.rank, ct, ts_seed, data_seed=pose),
                                train_lora(model, targets, args.rank, st, ts_seed, data_seed=pose + 1))}
            prompt = merged_prompt(ct, st)
            for method, (tc, tsy) in trained.items():
                for kind, name in candidate_plans():
                    m, at = plan_models(model, targets, tc.updates, tsy.updates, kind, name)
                    imgs = sample_images(m, prompt, args.samples, seed=1000 + pose, steps=args.sample_steps, model_at=at)
                    s = scorer.score(imgs, ct.image, st.image, c_shape, s_style)
                    rows.append({"pair": f"{c_shape}+{s_style}/seed{seed}", "method": method, "kind": kind,
                                 "plan": name, "selection_score": selection_score(s), **s})
            print(f"[selection {c_shape}+{s_style}/seed{seed}] scored {len(candidate_plans())} plans per method",
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


def plan_label(method: str, kind: str, name: str) -> str:
    return f"{method} merged, {'λ over steps' if kind == 'schedule' else 'λ per block'}: {name}"


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
    ts = TrainSettings(steps=args.steps, lr=args.lr, seed=0)
    selection = select_plans(model, basis, targets, scorer, args) if args.plans else None
    rows, mats, qmats, lam_rows, grid_cells, curves = [], [], [], [], {}, {}
    pairs = PAIRS[: args.pairs]
    for pi, (c_shape, s_style, ref_style, ref_shape) in enumerate(pairs):
        for seed in range(args.seeds):
            ct = content_task(c_shape, ref_style, pose_seed=seed)
            st = style_task(s_style, ref_shape, pose_seed=seed)
            prompt = merged_prompt(ct, st)
            ts_seed = TrainSettings(steps=ts.steps, lr=ts.lr, seed=seed)
            trained = {
                "QR-LoRA ΔR": (train_qr(model, basis, ct, ts_seed, data_seed=seed),
                               train_qr(model, basis, st, ts_seed, data_seed=seed + 1)),
                "LoRA": (train_lora(model, targets, args.rank, ct, ts_seed, data_seed=seed),
                         train_lora(model, targets, args.rank, st, ts_seed, data_seed=seed + 1)),
            }
            if args.triangular:  # the official code's default (triu_deltaR), same budget
                trained["QR-LoRA ΔR triangular"] = (
                    train_qr(model, basis, ct, ts_seed, data_seed=seed, triangular=True),
                    train_qr(model, basis, st, ts_seed, data_seed=seed + 1, triangular=True))
            _, cref_mask = scenes.render(ct.shape, ct.style, ct.pose, with_mask=True)
            label = f"{c_shape}+{s_style}/seed{seed}"
            print(f"[{label}] trained in " + ", ".join(
                f"{m}: {a.seconds:.0f}+{b.seconds:.0f} s" for m, (a, b) in trained.items()), flush=True)

            def score(m, p, model_at=None):
                imgs = sample_images(m, p, args.samples, seed=1000 + seed, steps=args.sample_steps, model_at=model_at)
                s = scorer.score(imgs, ct.image, st.image, c_shape, s_style)
                s["mask_iou"] = mask_iou(imgs, cref_mask)
                return s, imgs

            base_s, _ = score(model, prompt)
            rows.append({"pair": label, "method": "base model (no adapter)", **base_s})
            for method, (tc, tsy) in trained.items():
                for what, lams in (("content only", (1, 0)), ("style only", (0, 1)), ("merged", (1, 1))):
                    m = patched_model(model, targets, [(tc.updates, lams[0]), (tsy.updates, lams[1])])
                    s, imgs = score(m, prompt)
                    rows.append({"pair": label, "method": f"{method} {what}", **s})
                if selection and method in PLAN_METHODS:
                    for kind, name in selection["best"][method].items():
                        m, at = plan_models(model, targets, tc.updates, tsy.updates, kind, name)
                        s, _ = score(m, prompt, at)
                        rows.append({"pair": label, "method": plan_label(method, kind, name), **s})
                if method == "LoRA" and args.zip_steps:
                    zipped, zl = ziplora_merge(model, targets, tc, tsy, ct, st, steps=args.zip_steps, seed=seed)
                    s, _ = score(patched_model(model, targets, [(zipped, 1.0)]), prompt)
                    rows.append({"pair": label, "method": "ZipLoRA merge of the LoRAs", **s})
                if seed == 0:
                    curves[f"{label} {method}"] = {"content": tc.losses, "style": tsy.losses}
                    for lc in LAMBDAS:
                        for ls in LAMBDAS:
                            m = patched_model(model, targets, [(tc.updates, lc), (tsy.updates, ls)])
                            s, imgs = score(m, prompt)
                            lam_rows.append({"pair": label, "method": method, "lc": lc, "ls": ls, **s})
                            if pi == 0:
                                grid_cells[(method, lc, ls)] = imgs[0]
            # matrix statistics (paper Fig. 2 / Table 4)
            qc, qs = trained["QR-LoRA ΔR"]
            lc_, ls_ = trained["LoRA"]
            for t in targets:
                mats.append({"pair": label, "target": t.name,
                             "ΔR_c vs ΔR_s": cos(qc.delta.delta[t.name], qs.delta.delta[t.name]),
                             "QR ΔW_c vs ΔW_s": cos(qc.updates[t.name], qs.updates[t.name]),
                             "LoRA A_c vs A_s": cos(lc_.lora.down[targets.names().index(t.name)].detach(),
                                                    ls_.lora.down[targets.names().index(t.name)].detach()),
                             "LoRA B_c vs B_s": cos(lc_.lora.up[targets.names().index(t.name)].detach(),
                                                    ls_.lora.up[targets.names().index(t.name)].detach()),
                             "LoRA ΔW_c vs ΔW_s": cos(lc_.updates[t.name], ls_.updates[t.name])})
            if args.qr_mode and pi == 0 and seed == 0:
                # paper Fig. 2 / §4.3: train Q and R together for each task; are the two trained Q alike?
                qq = [train_qr(model, basis, t, ts_seed, data_seed=seed + k, mode="qr") for k, t in enumerate((ct, st))]
                for t in targets:
                    qmats.append({"target": t.name, "Q_c vs Q_s (Q+R runs)": cos(qq[0].extra["q"][t.name],
                                                                                 qq[1].extra["q"][t.name]),
                                  "Q_c vs Q₀": cos(qq[0].extra["q"][t.name], basis.q[t.name]),
                                  "Q_s vs Q₀": cos(qq[1].extra["q"][t.name], basis.q[t.name])})
            params = {m: a.params for m, (a, _) in trained.items()}
            seconds = {m: [a.seconds, b.seconds] for m, (a, b) in trained.items()}
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = {m: {k: mean_std([r[k] for r in rows if r["method"] == m]) for k in METRICS} for m in methods}
    mat_keys = [k for k in mats[0] if k not in ("pair", "target")]
    mat_table = {k: {"mean": mean_std([abs(r[k]) for r in mats])[0], "max": max(abs(r[k]) for r in mats)}
                 for k in mat_keys}
    for k in (qmats[0] if qmats else {}):
        if k != "target":
            mat_table[k + ", first pair, seed 0"] = {"mean": mean_std([abs(r[k]) for r in qmats])[0],
                                                    "max": max(abs(r[k]) for r in qmats)}
    lam_table = {}
    for r in lam_rows:
        lam_table.setdefault((r["method"], r["lc"], r["ls"]), []).append(r)
    lam_summary = [{"method": m, "lc": lc, "ls": ls, **{k: mean_std([r[k] for r in v])[0] for k in METRICS}}
                   for (m, lc, ls), v in lam_table.items()]
    return {"table": table, "rows": rows, "selection": selection, "plan_diffs": plan_diffs(rows, selection), "matrix": mat_table, "matrix_rows": mats, "q_rows": qmats, "lambda": lam_summary,
            "grid_cells": grid_cells, "curves": curves, "params": params, "train_seconds_last": seconds,
            "decompose_seconds": decompose_s, "targets": len(targets), "model_meta": meta,
            "pairs": [list(p) for p in pairs]}


def plan_diffs(rows: list[dict], selection: dict | None) -> list[dict]:
    """Per reported pair × seed: the chosen plan's score minus the plain merge's (same adapters, same noise)."""
    if not selection:
        return []
    out = []
    for method in PLAN_METHODS:
        plain = {r["pair"]: r for r in rows if r["method"] == f"{method} merged"}
        for kind, name in selection["best"][method].items():
            mine = [r for r in rows if r["method"] == plan_label(method, kind, name)]
            entry = {"method": method, "kind": kind, "plan": name, "n": len(mine)}
            for k in ("selection_score",) + METRICS:
                get = selection_score if k == "selection_score" else (lambda r, k=k: r[k])
                d = [get(r) - get(plain[r["pair"]]) for r in mine]
                entry[k] = mean_std(d)
                if k == "selection_score":
                    entry["wins"] = sum(x > 0 for x in d)
            out.append(entry)
    return out


def write_grid(cells: dict, path: Path) -> None:
    """Rows: (method, λs); columns: λc = 0.5, 0.75, 1.0; one sample of the first pair, seed 0, per cell."""
    methods = sorted({m for m, _, _ in cells})
    rows, labels = [], []
    for m in methods:
        for ls in LAMBDAS:
            rows.append(torch.stack([cells[(m, lc, ls)] for lc in LAMBDAS]))
            labels.append(f"{m}: lambda_s = {ls}; columns lambda_c = " + ", ".join(str(lc) for lc in LAMBDAS))
    scenes.labeled_rows(rows, labels, scale=4, label_width=250).save(path)


def fmt(ms) -> str:
    m, s = ms
    return f"{m:.3f} ± {s:.3f}"


def plan_markdown(res: dict) -> list[str]:
    sel = res.get("selection")
    if not sel:
        return []
    L = ["", "## λ over steps and λ per block vs plain addition", "",
         "Selection (no tuning on the reported pairs): every candidate — plain addition, the schedules "
         + ", ".join(SCHEDULES) + " (`qr_core/merging/lambda_schedule.py`; factors of λc = λs = 1 over the sampling progress) and "
         "the block profiles " + "; ".join(f"{n} (content '{c}', style '{s}')" for n, (c, s) in BLOCK_PROFILES.items())
         + f" — was scored on the separate selection pairs {'; '.join(', '.join(p[:2]) for p in sel['pairs'])} "
         f"(pose and noise seeds {SELECT_POSE_OFFSET}–{SELECT_POSE_OFFSET + sel['seeds'] - 1}; the reported runs use 0–1), with adapters "
         "trained there by the same settings. For each method the "
         "schedule and the profile with the highest mean selection score, (P(shape) + P(style)) / 2, were then "
         "run once on the reported pairs (rows '… merged, λ over steps: …' / '… merged, λ per block: …' in the "
         "table above).", "", "Selection pairs, mean over pairs × seeds:", "",
         "| method | plan | selection score | p_shape | p_style |", "|---|---|---|---|---|"]
    for r in sel["summary"]:
        chosen = " (chosen)" if r["kind"] != "plain" and sel["best"][r["method"]][r["kind"]] == r["plan"] else ""
        L.append(f"| {r['method']} | {r['kind']}{': ' + r['plan'] if r['plan'] else ''}{chosen} | "
                 f"{r['selection_score']:.3f} | {r['p_shape']:.3f} | {r['p_style']:.3f} |")
    L += ["", "Reported pairs: the chosen plan minus plain addition of the same adapters, per pair × seed "
          "(mean ± std; wins = pairs × seeds where the selection score rose):", "",
          "| method | chosen plan | wins | selection score | " + " | ".join(METRICS) + " |",
          "|---|---|---|---|" + "---|" * len(METRICS)]
    for d in res["plan_diffs"]:
        L.append(f"| {d['method']} | {d['kind']}: {d['plan']} | {d['wins']}/{d['n']} | {fmt(d['selection_score'])} | "
                 + " | ".join(fmt(d[k]) for k in METRICS) + " |")
    return L


def write_markdown(res: dict, args, path: Path, command: str) -> None:
    L = ["# Disentanglement on the procedural world (QR-LoRA ΔR vs LoRA)", "",
         f"Command: `{command}`  ", f"Machine: {describe_machine()}{'; ' + args.note if args.note else ''}  ",
         f"Wall time: {res['wall_seconds']:.0f} s.  ",
         f"Base model: `{args.model}` (steps {res['model_meta'].get('steps')}, seed {res['model_meta'].get('seed')}; "
         f"trained by `{res['model_meta'].get('command', '?')}`)  ",
         f"Setting: rank {args.rank}{f' (QR-LoRA ΔR: rank {args.qr_rank})' if args.qr_rank else ''} on the {res['targets']} 'paper' targets, {args.steps} steps at LR {args.lr} "
         f"(AdamW, one image, 4 noise draws per step), {args.samples} samples × {args.sample_steps} Euler steps "
         f"with CFG 3 per cell; pairs {args.pairs} × seeds {args.seeds}.  ",
         "Trainable parameters per adapter: " + ", ".join(f"{m} {n:,}" for m, n in res["params"].items())
         + " (a triangular ΔR trains only the entries on and above the diagonal; the others stay 0). "
         f"One-off decomposition: {res['decompose_seconds']:.2f} s.", "",
         "Pairs (content shape, style, content reference's style, style reference's shape): "
         + "; ".join(", ".join(p) for p in res["pairs"]), "",
         "## Table 1 analogue: sampling \"a <c> in <s> style\" (mean ± std over pairs × seeds)", "",
         "content_sim / style_sim: cosine of the world encoder's content / style features to the content / style "
         "reference (DINO / CLIP-I analogue). p_shape / p_style: encoder probability of the true <c> / <s> "
         "(ground truth). mask_iou: foreground overlap with the content reference's shape. Higher is better for all.", "",
         "| method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for m, v in res["table"].items():
        L.append(f"| {m} | " + " | ".join(fmt(v[k]) for k in METRICS) + " |")
    L += plan_markdown(res)
    L += ["", "## Matrix statistics (paper Fig. 2 / Table 4): |cosine| between the content and style adapters, "
          "per target", "", "| pair of matrices | mean over targets × runs | max |", "|---|---|---|"]
    for k, v in res["matrix"].items():
        L.append(f"| {k} | {v['mean']:.4f} | {v['max']:.4f} |")
    L += ["", "## λ ablation (paper Fig. 7), seed 0, mean over pairs", "",
          "| method | λc | λs | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS)]
    for r in res["lambda"]:
        L.append(f"| {r['method']} | {r['lc']} | {r['ls']} | " + " | ".join(f"{r[k]:.3f}" for k in METRICS) + " |")
    L += ["", f"![λ grid]({args.prefix}_lambda_grid.png)", "",
          f"`{args.prefix}_lambda_grid.png`: first pair, seed 0, first sample; top block "
          + ", then ".join(sorted({m for m, _, _ in res['grid_cells']}))
          + "; in each block rows are λs = 0.5, 0.75, 1.0 and columns λc = 0.5, 0.75, 1.0.", ""]
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
    p.add_argument("--zip-steps", type=int, default=100, help="ZipLoRA merger steps (0: skip the ZipLoRA row)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core VM)")
    p.add_argument("--no-triangular", dest="triangular", action="store_false",
                   help="skip the triangular ΔR rows (the official code's mask in its basis)")
    p.add_argument("--no-qr-mode", dest="qr_mode", action="store_false",
                   help="skip the Q+R runs (trained Q similarity) on the first pair")
    p.add_argument("--no-plans", dest="plans", action="store_false",
                   help="skip λ over steps / λ per block (selection on SELECT_PAIRS, then the chosen plans' rows)")
    p.add_argument("--select-pairs", type=int, default=len(SELECT_PAIRS))
    p.add_argument("--select-seeds", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--prefix", default="disentangle")
    p.add_argument("--note", default="", help="free text recorded next to the machine (e.g. load)")
    p.add_argument("--tiny", action="store_true", help="1 pair, 1 seed, 6 steps, 2 samples × 4 Euler steps")
    a = p.parse_args(argv)
    if a.tiny:
        a.pairs, a.seeds, a.steps, a.samples, a.sample_steps, a.rank, a.zip_steps = 1, 1, 6, 2, 4, 4, 3
        a.select_pairs = 1
    argv_list = argv if argv is not None else sys.argv[1:]
    command = "python bench/disentangle.py " + " ".join(shlex.quote(x) for x in argv_list)
    t0 = time.perf_counter()
    res = run(a)
    res["wall_seconds"] = time.perf_counter() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_grid(res["grid_cells"], out / f"{a.prefix}_lambda_grid.png")
    write_markdown(res, a, out / f"{a.prefix}.md", command)
    js = {k: v for k, v in res.items() if k != "grid_cells"}
    js["command"], js["machine"] = command, describe_machine()
    (out / f"{a.prefix}.json").write_text(json.dumps(js, indent=1, default=str))
    print((out / f"{a.prefix}.md").read_text())
    return res


if __name__ == "__main__":
    main()
