"""λ re-apply benchmark: what moving a λ slider costs, Merge ΔR against ComfyUI's stock LoRA loaders.

A user changes λc or λs and queues again: ComfyUI re-runs Merge ΔR (a new
patched clone of the model) and the sampler's `load_models_gpu` unpatches
the previous weights and patches the new ones. The baseline is the same mix
done the stock way: content and style written as LoRA files by Export as
LoRA, then two `LoraLoaderModelOnly` nodes with strengths λc and λs (each
keeps its loaded file between runs, as in a running ComfyUI).

For each λ change after the first application (which also pays for
switching from the other mechanism's patches) it times the node part (Merge
ΔR, or both loaders) and the apply part (`load_models_gpu`: unpatch and
patch), and reports medians. Both end on the same λ, and the largest
difference between their patched weights is reported as a check that they
apply the same mix. For reference it also times the Decompose node on the
same model, cold (cache miss) and warm (cache hit). Results go to `<out-dir>/merge_reapply-<machine>[-<size>].json` and `.md`.

    COMFYUI_PATH=/path/to/ComfyUI python bench/merge_reapply.py            # full-size SDXL, fp16 storage
    COMFYUI_PATH=... python bench/merge_reapply.py --device cuda --arch sdxl flux
    COMFYUI_PATH=... python bench/merge_reapply.py --quick --out-dir /tmp/x   # tiny FLUX, CI smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from comfy_models import PACK_DIR, build, comfy_setup, pack_module  # this folder, as below
from paired import loadavg, spread
from qr_core.machine import machine_info  # noqa: E402

LAMBDAS = [(1.0, 1.0), (0.8, 1.0), (0.8, 1.2), (0.6, 1.2), (0.6, 1.4), (0.5, 1.5)]
DTYPES = ("fp16", "bf16", "fp32")


def clock(device) -> float:
    """perf_counter after the device's queued work is done."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def run_pairs(mechanisms: dict, lambdas, device, keys) -> tuple[dict, dict]:
    """Each λ pair applied as ComfyUI would on a re-queue, the mechanisms alternating (A B A B …): every
    application unpatches the other mechanism's weights and patches its own, the same work a λ change costs.
    Returns per-mechanism timings and the patched weights of `keys` right after each mechanism's last application."""
    import comfy.model_management

    rows, weights = {name: [] for name in mechanisms}, {}
    for i, (lc, ls) in enumerate(lambdas):
        for name, make in mechanisms.items():
            t0 = clock(device)
            model = make(lc, ls)
            t1 = clock(device)
            comfy.model_management.load_models_gpu([model])
            t2 = clock(device)
            rows[name].append({"lambda_content": lc, "lambda_style": ls, "node_s": t1 - t0, "apply_s": t2 - t1,
                               "total_s": t2 - t0})
            if i == len(lambdas) - 1:
                weights[name] = target_weights(model, keys)
    return rows, weights


def target_weights(model, keys) -> dict:
    sd = model.model.diffusion_model.state_dict()
    return {k: sd[k].detach().float().clone() for k in keys}


def bench_arch(pack, arch: str, opts, device) -> dict:
    import torch
    import nodes

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[opts.dtype]
    t0 = time.perf_counter()
    base = build(arch, opts.size, device, dtype)
    built_s = time.perf_counter() - t0
    # The Decompose that precedes every merge, through the node: cold (cache miss) and warm (cache hit).
    decompose = nodes.NODE_CLASS_MAPPINGS["QRLoRADecompose"]
    t0 = time.perf_counter()
    basis = decompose.execute(base, opts.rank, "paper", "", "fast", True)[0]
    decompose_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = decompose.execute(base, opts.rank, "paper", "", "fast", True)[0]
    decompose_warm_s = time.perf_counter() - t0
    if warm.cache_status != "hit":
        raise RuntimeError(f"the second Decompose was not a cache hit: {warm.cache_status}")
    random_delta = pack_module(pack, "qr_core.adapters.delta").random_delta  # the pack's classes, as the nodes check them
    content = random_delta(basis, 1, opts.scale, "bench_content")
    style = random_delta(basis, 2, opts.scale, "bench_style")

    merge = nodes.NODE_CLASS_MAPPINGS["QRLoRAMergeDeltas"]
    export = nodes.NODE_CLASS_MAPPINGS["QRLoRAExportLoRA"]
    for d in (content, style):
        export.execute(lora_name=d.name, naming="comfyui", dtype=opts.dtype, content=d, style=None,
                       lambda_content=1.0, lambda_style=1.0, lambda_extra_1=1.0, lambda_extra_2=1.0)
    content_loader, style_loader = nodes.LoraLoaderModelOnly(), nodes.LoraLoaderModelOnly()

    def qr_merge(lc, ls):
        return merge.execute(base, content=content, style=style, lambda_content=lc, lambda_style=ls,
                             lambda_extra_1=1.0, lambda_extra_2=1.0)[0]

    def stock_loras(lc, ls):
        m = content_loader.load_lora_model_only(base, f"{content.name}.safetensors", lc)[0]
        return style_loader.load_lora_model_only(m, f"{style.name}.safetensors", ls)[0]

    keys = sorted(basis.targets.shapes)[:: max(1, len(basis.targets.shapes) // 24)]  # a sample, to spare memory
    rows, weights = run_pairs({"qr_merge": qr_merge, "stock_lora_loaders": stock_loras},
                              LAMBDAS[: opts.changes + 1], device, keys)
    results = {name: {"changes": r, **{f"median_{p}_s": statistics.median(x[f"{p}_s"] for x in r[1:])
                                       for p in ("node", "apply", "total")}} for name, r in rows.items()}
    # The first application of each is a warm-up; then one ratio per λ change, taken in the same pair.
    results["total_ratio"] = spread([q["total_s"] / s["total_s"] for q, s in
                                     zip(rows["qr_merge"][1:], rows["stock_lora_loaders"][1:])])
    a, b = weights["qr_merge"], weights["stock_lora_loaders"]
    import comfy.model_management

    comfy.model_management.unload_all_models()
    original = target_weights(base, keys)
    diff = max(float((a[k] - b[k]).abs().max()) for k in keys)
    update = max(float((a[k] - original[k]).abs().max()) for k in keys)
    return {"arch": arch, "size": opts.size, "dtype": opts.dtype, "rank": opts.rank,
            "targets": len(basis.targets.shapes), "target_params": sum(s[0] * s[1] for s in
                                                                      basis.targets.shapes.values()),
            "model_params": sum(p.numel() for p in base.model.diffusion_model.parameters()),
            "build_s": built_s, "decompose_s": decompose_s, "decompose_warm_s": decompose_warm_s, "max_abs_difference": diff,
            "max_abs_update": update, "compared_targets": len(keys), **results}


def report(results: list[dict], opts, machine: str) -> str:
    lines = [f"# λ re-apply benchmark: {machine}", "",
             f"ComfyUI model classes, size '{opts.size}', {opts.dtype} storage, rank {opts.rank}, "
             f"{opts.threads} thread(s); the two mechanisms alternate (A B A B …) over {opts.changes} λ changes "
             f"after a first application of each; medians, and the ratio's median (min–max) over the pairs. "
             f"Load average {opts.load_start} at start, {opts.load_end} at the end.", "",
             "| arch | model params | targets (params) | mechanism | node | apply (unpatch + patch) | total |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for mech in ("qr_merge", "stock_lora_loaders"):
            m = r[mech]
            lines.append(f"| {r['arch']} | {r['model_params'] / 1e9:.2f} B | {r['targets']} "
                         f"({r['target_params'] / 1e9:.2f} B) | {mech} | {m['median_node_s'] * 1000:.1f} ms | "
                         f"{m['median_apply_s'] * 1000:.0f} ms | {m['median_total_s'] * 1000:.0f} ms |")
    lines += ["", "| arch | total, qr_merge / stock: median (min–max), pairs | max abs difference of patched weights "
              "(max abs update) |", "|---|---|---|"]
    for r in results:
        t = r["total_ratio"]
        lines.append(f"| {r['arch']} | {t['median']:.2f}× ({t['min']:.2f}–{t['max']:.2f}), {t['n']} | "
                     f"{r['max_abs_difference']:.2e} ({r['max_abs_update']:.2e}, {r['compared_targets']} targets "
                     f"compared) |")
    lines += ["", "Decompose (fast, rank as above) on the same model through the node, for reference:", "",
              "| arch | cold (cache miss) | warm (cache hit) |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arch']} | {r['decompose_s']:.2f} s | {r['decompose_warm_s']:.3f} s |")
    lines += ["", "node: the node's own work (Merge ΔR: check, Σλ ΔR, clone and add_patches; stock: two "
              "LoraLoaderModelOnly with their files already loaded). apply: `load_models_gpu`, which restores "
              "the previous weights and computes W + up·down for every target. The difference column compares "
              "the two mechanisms' final weights (same λ; the stock files store up/down in the storage dtype)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="+", default=["sdxl"], help="sd3, sdxl, flux")
    ap.add_argument("--size", default="full", choices=["tiny", "small", "full"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp16", choices=DTYPES, help="storage dtype of the model")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--scale", type=float, default=0.02, help="size of the random ΔR entries")
    ap.add_argument("--changes", type=int, default=len(LAMBDAS) - 1, help="timed λ changes (at most 5)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="tiny FLUX, rank 4, 2 changes: a smoke test")
    ap.add_argument("--out-dir", default=str(PACK_DIR / "bench" / "results"))
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.arch, opts.size, opts.rank, opts.changes, opts.dtype = ["flux"], "tiny", 4, 2, "fp32"
    opts.changes = max(1, min(opts.changes, len(LAMBDAS) - 1))

    import torch

    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    opts.load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="qr_lora_bench_") as tmp:
        pack = comfy_setup(opts.device, {"loras": Path(tmp) / "loras", "qr_lora": Path(tmp) / "qr_lora"})
        results = []
        for arch in opts.arch:
            r = bench_arch(pack, arch, opts, device)
            print(json.dumps({k: v for k, v in r.items() if not isinstance(v, dict)}), flush=True)
            results.append(r)
    opts.load_end = loadavg()
    machine = machine_info(opts.device)["slug"]
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"merge_reapply-{machine}" + ("" if opts.size == "full" else f"-{opts.size}")
    meta = {"machine": machine, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "settings": {k: v for k, v in vars(opts).items() if k != "out_dir"},
            "results": results}
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report(results, opts, machine))
    print(report(results, opts, machine))
    return meta


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
