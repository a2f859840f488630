"""`python -m qr_core demo`: the whole QR-LoRA job on a built-in model and task, in about a minute on a CPU.

A FLUX-layout model (fused qkv, ComfyUI key names, ~5 M parameters, fixed
seed) is decomposed (cold, then warm from the cache); a content ΔR and a
style ΔR are trained on two small built-in latents with the flow-matching
velocity objective; they are merged at (λc, λs), exported as a standard LoRA,
reloaded with plain LoRA arithmetic and checked against the merge. The report
gives timings, parameter counts, the per-target cosine similarity of the two
ΔR, and how well each model fits each task.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

from .adapter import QRAdapter, frozen
from .analysis import delta_similarity, summarize
from .cache import BasisCache, get_basis
from .decompose import DecomposeSettings
from .delta import QRDelta
from .files import load_tensors
from .merge import export_lora, merge
from .mini_flux import MiniFlux, MiniFluxConfig
from .targets import select_targets
from .training import TrainSettings, train

CONTENT_PROMPT = "a photo of a <c> dog"
STYLE_PROMPT = "a cat in <s> style"


def encode_prompt(prompt: str, dim: int, length: int = 8) -> torch.Tensor:
    """A fixed stand-in for a text encoder: each word maps to its own seeded random vector."""
    words = (prompt.lower().split() + ["<pad>"] * length)[:length]
    vecs = [torch.randn(dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode()))) for w in words]
    return torch.stack(vecs)[None]


def task_latents(size: int = 16, channels: int = 4) -> dict[str, torch.Tensor]:
    """Two one-image tasks: a content latent (a ring-shaped subject) and a style latent (diagonal stripes)."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ring = torch.exp(-((x.square() + y.square()).sqrt() - 0.55).square() / 0.02)
    content = torch.stack([ring * 2 - 0.5, -ring, ring * 0.5, torch.zeros_like(ring)])[:channels]
    stripes = torch.sin((x + y) * 3 * math.pi)
    style = torch.stack([stripes, stripes.roll(2, 1), -stripes, stripes * 0.5])[:channels]
    return {"content": content[None], "style": style[None]}


def flow_loss(model, x0, context, generator: torch.Generator | None = None, batch: int = 4):
    """The flow-matching objective of SD3/FLUX: regress the velocity noise − x0 at uniform t."""
    x0 = x0.expand(batch, -1, -1, -1)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.rand(batch, generator=generator)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    return F.mse_loss(model(xt, t, context.expand(batch, -1, -1)), noise - x0)


def evaluate(model, x0, context, samples: int = 16) -> float:
    with torch.no_grad():
        return float(flow_loss(model, x0, context, torch.Generator().manual_seed(1234), batch=samples))


def run_demo(out_dir: str | Path = "qr_lora_demo", steps: int = 300, rank: int = 32, lr: float = 1e-3,
             lambdas: tuple[float, float] = (1.0, 1.0), seed: int = 0, log=print) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "basis_cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # the demo shows a cold start, then a warm one
    torch.manual_seed(seed)
    config = MiniFluxConfig()
    model = MiniFlux(config).eval()
    weights = {k: v for k, v in model.state_dict().items()}
    report: dict = {"model": {"layout": "FLUX (ComfyUI keys)", "params": sum(v.numel() for v in weights.values()),
                              "config": config.to_json()}}
    timings = report["timings_s"] = {}

    targets = select_targets({k: v.shape for k, v in weights.items()}, "paper")
    settings = DecomposeSettings(rank=rank, method="fast", seed=seed)
    cache = BasisCache(cache_dir)
    basis = get_basis(weights.__getitem__, targets, settings, cache)
    timings["decompose_cold"] = basis.seconds
    t0 = time.perf_counter()
    warm = get_basis(weights.__getitem__, targets, settings, cache)
    timings["decompose_warm"] = time.perf_counter() - t0
    log(f"decomposed {targets.describe()} at rank {rank}: cold {basis.seconds:.2f} s ({basis.cache_status}), "
        f"warm {timings['decompose_warm']:.2f} s ({warm.cache_status})")

    latents = task_latents(config.latent_size, config.in_channels)
    contexts = {"content": encode_prompt(CONTENT_PROMPT, config.context_dim),
                "style": encode_prompt(STYLE_PROMPT, config.context_dim)}
    deltas: dict[str, QRDelta] = {}
    base_loss = {task: evaluate(model, latents[task], contexts[task]) for task in latents}
    for task in ("content", "style"):
        adapter = QRAdapter(basis)
        gen = torch.Generator().manual_seed(seed + (task == "style"))
        ts = TrainSettings(steps=steps, lr=lr, seed=seed)
        with frozen(model), adapter.attached(model):
            result = train(adapter.trainable(), lambda step: flow_loss(model, latents[task], contexts[task], gen), ts)
        timings[f"train_{task}"] = result.seconds
        prompt = CONTENT_PROMPT if task == "content" else STYLE_PROMPT
        deltas[task] = adapter.to_delta(trigger_words=prompt, training=ts.to_json(), name=task)
        deltas[task].save(out / f"delta_{task}.safetensors")
        report[f"loss_curve_{task}"] = result.losses
        log(f"trained {task} ΔR ({steps} steps): loss {sum(result.losses[:20]) / 20:.4f} → "
            f"{sum(result.losses[-20:]) / 20:.4f} in {result.seconds:.1f} s")

    t0 = time.perf_counter()
    terms = merge([deltas["content"], deltas["style"]], list(lambdas))
    timings["merge"] = time.perf_counter() - t0
    lora_path = export_lora(terms, targets.shapes, "flux", out / "merged_lora.safetensors",
                            sources=["delta_content", "delta_style"], weights=lambdas)

    # Reload the exported LoRA with nothing but LoRA arithmetic, as a stock loader does.
    t0 = time.perf_counter()
    lora, _ = load_tensors(lora_path)
    merged_weights = dict(weights)
    for key in targets.shapes:
        stem = "diffusion_model." + key[: -len(".weight")]
        up, down = lora[f"{stem}.lora_up.weight"].float(), lora[f"{stem}.lora_down.weight"].float()
        scale = float(lora[f"{stem}.alpha"]) / down.shape[0]
        merged_weights[key] = weights[key] + scale * up @ down
    timings["export_and_reload"] = time.perf_counter() - t0
    exact = dict(weights)
    for term in terms:
        w = exact[term.target.key].clone()
        w[term.target.rows(w.shape[0])] += term.dense()
        exact[term.target.key] = w
    report["lora_reload_max_abs_error"] = max(float((merged_weights[k] - exact[k]).abs().max()) for k in targets.shapes)

    def fit(state, task):
        m = MiniFlux(config).eval()
        m.load_state_dict(state)
        return evaluate(m, latents[task], contexts[task])

    def with_delta(d):
        state = dict(weights)
        for term in merge([d], [1.0]):
            w = state[term.target.key].clone()
            w[term.target.rows(w.shape[0])] += term.dense()
            state[term.target.key] = w
        return state

    report["fit_loss"] = {  # lower is better: each task's flow loss under each model
        "base": base_loss,
        "content ΔR": {t: fit(with_delta(deltas["content"]), t) for t in latents},
        "style ΔR": {t: fit(with_delta(deltas["style"]), t) for t in latents},
        f"merged λ={lambdas}": {t: fit(merged_weights, t) for t in latents},
    }
    sims = delta_similarity(deltas["content"], deltas["style"])
    report["delta_r_cosine"] = {**summarize(sims), "per_target": sims}
    in_out = [(targets.shapes[t.key][1], (t.size if t.is_slice else targets.shapes[t.key][0])) for t in targets]
    report["params"] = {"delta_r_per_adapter": deltas["content"].num_params(),
                        "lora_same_rank": sum(rank * (i + o) for i, o in in_out), "targets": len(targets), "rank": rank}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    log(format_report(report, out))
    return report


def format_report(r: dict, out: Path) -> str:
    t = r["timings_s"]
    p = r["params"]
    c = r["delta_r_cosine"]
    lines = [
        "", f"QR-LoRA demo report (files in {out}/)",
        f"  model: {r['model']['layout']}, {r['model']['params'] / 1e6:.1f} M parameters; "
        f"{p['targets']} targets at rank {p['rank']}",
        f"  decompose: cold {t['decompose_cold']:.2f} s, warm (cache) {t['decompose_warm']:.2f} s",
        f"  train: content {t['train_content']:.1f} s, style {t['train_style']:.1f} s; merge {t['merge'] * 1000:.1f} ms",
        f"  trainable parameters per ΔR: {p['delta_r_per_adapter']:,} (a LoRA of the same rank: {p['lora_same_rank']:,})",
        f"  cosine(ΔR_content, ΔR_style) over targets: max {c['max']:.3f}, mean {c['mean']:.3f}, min {c['min']:.3f}",
        f"  exported LoRA reloaded with plain LoRA arithmetic: max |error| {r['lora_reload_max_abs_error']:.2e}",
        "  flow loss per task (lower fits better):",
        f"    {'model':<24}{'content task':>14}{'style task':>12}",
    ]
    for name, losses in r["fit_loss"].items():
        lines.append(f"    {name:<24}{losses['content']:>14.4f}{losses['style']:>12.4f}")
    return "\n".join(lines)
