"""`python -m qr_core demo`: the whole QR-LoRA job on the shipped world model, in under a minute on 2 CPU cores.

The base model is the small FLUX-layout text-to-image flow model pretrained
on the procedural world (`qr_core/world/assets/world_model.safetensors`, see
`model.py`). The demo picks a held-out shape as the new content `<c>`
and a held-out style as `<s>`, decomposes the model (cold, then warm from the
basis cache), trains a content ΔR on one image ("a <c>") and a style ΔR on one
image ("a <shape> in <s> style"), merges them at (λc, λs) = (1, 1), exports the
merge as a standard LoRA, reloads it with plain LoRA arithmetic and checks it,
and writes into the output folder: the references, content-only, style-only and
merged samples, a λ grid, the loss curves, `report.json` and `report.md`
(timings, parameter counts, ΔR similarity, encoder scores).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from . import scenes
from ..adapters.analysis import delta_similarity, summarize
from ..bases.cache import BasisCache, get_basis
from ..bases.decompose import DecomposeSettings
from ..files import load_tensors
from ..merging.merge import add_to_weights, export_lora, merge
from ..targets import select_targets
from ..training.loop import TrainSettings
from .model import load_world_model
from .merges import QR, PairRun, merge_modes
from .tasks import content_task, merged_prompt, patched_model, sample_images, style_task, train_qr

CONTENT = ("heart", "sketch")  # held-out shape <c>, and the seen style its reference is painted in
STYLE = ("tiger", "circle")  # held-out style <s>, and the seen shape its reference shows
LAMBDAS = (0.0, 0.5, 0.75, 1.0)
# The λ schedule and block profile of the overview's "λ over steps" and "λ per block" rows: the ones
# bench/disentangle.py chose for ΔR on world v3's selection pairs (bench/results/disentangle_v3.md).
DEMO_PLANS = {QR: {"schedule": "content-early", "blocks": "content double only"}}


def loss_curve_png(curves: dict[str, list[float]], path: Path, width: int = 480, height: int = 240) -> None:
    """Smoothed loss curves drawn with Pillow (no matplotlib needed)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    pad = 30
    colors = [(200, 40, 40), (40, 90, 200), (30, 150, 60), (150, 60, 160)]
    smooth = {}
    for name, ys in curves.items():
        k = max(1, len(ys) // 20)
        smooth[name] = [sum(ys[max(0, i - k + 1): i + 1]) / len(ys[max(0, i - k + 1): i + 1]) for i in range(len(ys))]
    lo = min(min(v) for v in smooth.values())
    hi = max(max(v) for v in smooth.values())
    hi = hi if hi > lo else lo + 1
    d.rectangle([pad, 10, width - 10, height - pad], outline="black")
    for (name, ys), col in zip(smooth.items(), colors):
        n = max(len(ys) - 1, 1)
        pts = [(pad + (width - pad - 10) * i / n, height - pad - (height - pad - 10) * (y - lo) / (hi - lo))
               for i, y in enumerate(ys)]
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
    for j, (name, col) in enumerate(zip(smooth, colors)):
        d.text((pad + 8, 14 + 12 * j), f"{name} loss", fill=col)
    d.text((2, 10), f"{hi:.3f}", fill="black")
    d.text((2, height - pad - 10), f"{lo:.3f}", fill="black")
    d.text((width // 2 - 20, height - pad + 8), "step", fill="black")
    img.save(path)


def run_demo(out_dir: str | Path = "qr_lora_demo", steps: int = 150, rank: int = 16, lr: float = 5e-3,
             lambdas: tuple[float, float] = (1.0, 1.0), seed: int = 0, samples: int = 4, sample_steps: int = 20,
             log=print) -> dict:
    """The whole job: decompose (cold, then warm), train a content and a style ΔR, merge, export and reload a
    LoRA, sample and score; writes pictures, report.json and report.md into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    model, meta = load_world_model()
    weights = dict(model.state_dict())
    report: dict = {"model": {"layout": "FLUX (ComfyUI keys)", "params": sum(v.numel() for v in weights.values()),
                              "config": model.config.to_json(), "pretrained": {k: meta.get(k) for k in
                                                                                ("steps", "seed", "command", "machine")}}}
    timings = report["timings_s"] = {}
    targets = select_targets({k: v.shape for k, v in weights.items()}, "paper")
    basis = decompose_twice(weights, targets, rank, seed, out / "basis_cache", timings, log)

    tasks = {"content": content_task(*CONTENT, pose_seed=seed), "style": style_task(*STYLE, pose_seed=seed)}
    prompt = merged_prompt(tasks["content"], tasks["style"])
    report["tasks"] = {k: {"prompt": t.prompt, "shape": t.shape, "style": t.style} for k, t in tasks.items()}
    report["merged_prompt"] = prompt
    trained = train_both(model, basis, tasks, TrainSettings(steps=steps, lr=lr, seed=seed), out, report, log)
    deltas = {kind: t.delta for kind, t in trained.items()}

    t0 = time.perf_counter()
    terms = merge([deltas["content"], deltas["style"]], list(lambdas))
    timings["merge"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    report["lora_reload_max_abs_error"] = export_and_reload_error(weights, targets, terms, lambdas, out)
    timings["export_and_reload"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    panel = sample_pictures(model, targets, tasks, trained, lambdas, samples, sample_steps, seed, out, report)
    timings["sampling"] = time.perf_counter() - t0
    score_samples(panel, tasks, report)

    sims = delta_similarity(deltas["content"], deltas["style"])
    report["delta_r_cosine"] = {**summarize(sims), "per_target": sims}
    in_out = [targets.shape(t)[::-1] for t in targets]
    report["params"] = {"delta_r_per_adapter": deltas["content"].num_params(),
                        "lora_same_rank": sum(rank * (i + o) for i, o in in_out), "targets": len(targets), "rank": rank}
    timings["total"] = time.perf_counter() - t_all
    (out / "report.json").write_text(json.dumps(report, indent=1))
    text = format_report(report, out)
    (out / "report.md").write_text("```\n" + text.strip() + "\n```\n")
    log(text)
    return report


def decompose_twice(weights: dict, targets, rank: int, seed: int, cache_dir: Path, timings: dict, log):
    """The basis from a cold cache, then again from the warm one: what a second ComfyUI run sees."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    settings = DecomposeSettings(rank=rank, method="exact", seed=seed)
    cache = BasisCache(cache_dir)
    basis = get_basis(weights.__getitem__, targets, settings, cache)
    timings["decompose_cold"] = basis.seconds
    t0 = time.perf_counter()
    warm = get_basis(weights.__getitem__, targets, settings, cache)
    timings["decompose_warm"] = time.perf_counter() - t0
    log(f"decomposed {targets.describe()} at rank {rank}: cold {basis.seconds:.2f} s ({basis.cache_status}), "
        f"warm {timings['decompose_warm']:.2f} s ({warm.cache_status})")
    return basis


def train_both(model, basis, tasks: dict, settings: TrainSettings, out: Path, report: dict, log) -> dict:
    """One ΔR per task, saved as delta_<kind>.safetensors; loss curves into the report and loss_curves.png."""
    trained = {}
    for i, (kind, task) in enumerate(tasks.items()):
        trained[kind] = train_qr(model, basis, task, settings, data_seed=settings.seed + i)
        trained[kind].delta.save(out / f"delta_{kind}.safetensors")
        report["timings_s"][f"train_{kind}"] = trained[kind].seconds
        losses = trained[kind].losses
        k = max(1, min(20, len(losses) // 4))
        report[f"loss_curve_{kind}"] = losses
        log(f"trained {kind} ΔR on \"{task.prompt}\" ({settings.steps} steps): loss {sum(losses[:k]) / k:.4f} → "
            f"{sum(losses[-k:]) / k:.4f} in {trained[kind].seconds:.1f} s")
    loss_curve_png({k: v.losses for k, v in trained.items()}, out / "loss_curves.png")
    return trained


def export_and_reload_error(weights: dict, targets, terms, lambdas, out: Path) -> float:
    """Export the merge as a LoRA, reload it with nothing but LoRA arithmetic (as a stock loader does) and
    return the largest difference to the exact W + Q·ΣλΔR."""
    lora_path = export_lora(terms, targets.shapes, "flux", out / "merged_lora.safetensors",
                            sources=["delta_content", "delta_style"], weights=lambdas)
    lora, _ = load_tensors(lora_path)
    reloaded = dict(weights)
    for key in targets.shapes:
        stem = "diffusion_model." + key[: -len(".weight")]
        up, down = lora[f"{stem}.lora_up.weight"].float(), lora[f"{stem}.lora_down.weight"].float()
        scale = float(lora[f"{stem}.alpha"]) / down.shape[0]
        reloaded[key] = weights[key] + scale * up @ down
    exact = add_to_weights(weights, ((term.target, term.dense()) for term in terms))
    return max(float((reloaded[k] - exact[k]).abs().max()) for k in targets.shapes)


def sample_pictures(model, targets, tasks: dict, trained: dict, lambdas, samples: int, sample_steps: int, seed: int,
                    out: Path, report: dict) -> list[torch.Tensor]:
    """References, base, content only, style only, merged and the λ grid as PNGs; returns the sample rows."""
    prompt = report["merged_prompt"]
    uc, us = trained["content"].updates, trained["style"].updates
    refs = torch.stack([tasks["content"].image, tasks["style"].image])
    scenes.save_png(scenes.image_grid(refs, 2, scale=4), out / "references.png")
    rows = {
        f"base model: {prompt}": (model, prompt, None),
        f"content ΔR: {tasks['content'].prompt}": (patched_model(model, targets, [(uc, 1.0)]), tasks["content"].prompt,
                                                   None),
        f"style ΔR: {tasks['style'].prompt}": (patched_model(model, targets, [(us, 1.0)]), tasks["style"].prompt, None),
    }
    # every ΔR merge mode of the world's table (plain sum, λ over steps, λ per block, and those added later)
    pair = PairRun(model, targets, tasks["content"], tasks["style"], {QR: (trained["content"], trained["style"])}, seed)
    report["merge_modes"] = list(merge_modes(DEMO_PLANS, families=(QR,)))
    for name, mode in merge_modes(DEMO_PLANS, families=(QR,)).items():
        m, at = mode(pair, *lambdas)
        rows[f"{name} λ={lambdas}: {prompt}"] = (m, prompt, at)
    names = ["base", "content_only", "style_only", "merged"] + [f"merged_{i}" for i in range(1, len(rows) - 3)]
    panel = []
    for name, (label, (m, p, at)) in zip(names, rows.items()):
        imgs = sample_images(m, p, samples, seed=1000 + seed, steps=sample_steps, model_at=at)
        scenes.save_png(scenes.image_grid(imgs, samples, scale=4), out / f"{name}.png")
        panel.append(imgs)
    scenes.labeled_rows([refs, *panel], ["references: content \"" + tasks["content"].prompt + "\", style \""
                                        + tasks["style"].prompt + "\"", *rows], scale=3).save(out / "overview.png")
    grid = []
    for ls in LAMBDAS:
        for lc in LAMBDAS:
            m = patched_model(model, targets, [(uc, lc), (us, ls)])
            grid.append(sample_images(m, prompt, 1, seed=1000 + seed, steps=sample_steps)[0])
    scenes.save_png(scenes.image_grid(torch.stack(grid), len(LAMBDAS), scale=4), out / "lambda_grid.png")
    report["images"] = {"references.png": "content reference, style reference",
                        **{f"{n}.png": label for n, label in zip(names, rows)},
                        "overview.png": "references, then base, content only, style only and every ΔR merge mode "
                                        "(labelled rows)",
                        "lambda_grid.png": f"rows λs = {LAMBDAS}, columns λc = {LAMBDAS}, prompt \"{prompt}\"",
                        "loss_curves.png": "training loss of both ΔR"}
    return panel


def score_samples(panel: list[torch.Tensor], tasks: dict, report: dict) -> None:
    """The world encoder's scores of the merged and the base samples, when its weights are shipped."""
    try:
        from .encoder import Scorer

        scorer = Scorer()
    except FileNotFoundError:
        return
    c, s = tasks["content"], tasks["style"]
    report["scores_merged"] = scorer.score(panel[3], c.image, s.image, c.shape, s.style)
    report["scores_base"] = scorer.score(panel[0], c.image, s.image, c.shape, s.style)
    report["scores_modes"] = {m: scorer.score(imgs, c.image, s.image, c.shape, s.style)
                              for m, imgs in zip(report["merge_modes"], panel[3:])}


def format_report(r: dict, out: Path) -> str:
    t = r["timings_s"]
    p = r["params"]
    c = r["delta_r_cosine"]
    lines = [
        "", f"QR-LoRA demo report (files in {out}/)",
        f"  model: {r['model']['layout']}, {r['model']['params'] / 1e6:.2f} M parameters, pretrained on the "
        f"procedural world ({r['model']['pretrained'].get('steps')} steps); {p['targets']} targets at rank {p['rank']}",
        f"  content task: \"{r['tasks']['content']['prompt']}\"; style task: \"{r['tasks']['style']['prompt']}\"; "
        f"merged prompt: \"{r['merged_prompt']}\"",
        f"  decompose: cold {t['decompose_cold']:.2f} s, warm (cache) {t['decompose_warm']:.2f} s",
        f"  train: content {t['train_content']:.1f} s, style {t['train_style']:.1f} s; merge {t['merge'] * 1000:.1f} ms; "
        f"sampling {t['sampling']:.1f} s; total {t['total']:.1f} s",
        f"  trainable parameters per ΔR: {p['delta_r_per_adapter']:,} (a LoRA of the same rank: {p['lora_same_rank']:,})",
        f"  cosine(ΔR_content, ΔR_style) over targets: max {c['max']:.3f}, mean {c['mean']:.3f}, min {c['min']:.3f}",
        f"  exported LoRA reloaded with plain LoRA arithmetic: max |error| {r['lora_reload_max_abs_error']:.2e}",
    ]
    scored = ([("base model", r["scores_base"])] if "scores_base" in r else []) + list(r.get("scores_modes", {}).items())
    for label, s in scored:
        lines.append(f"  {label:<30} on the merged prompt: P(shape=<c>) {s['p_shape']:.2f}, P(style=<s>) "
                     f"{s['p_style']:.2f}, content sim {s['content_sim']:.2f}, style sim {s['style_sim']:.2f}")
    lines.append("  images: references.png, base.png, content_only.png, style_only.png, merged.png, overview.png, "
                 "lambda_grid.png, loss_curves.png")
    return "\n".join(lines)
