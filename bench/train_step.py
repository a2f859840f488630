"""Train-step benchmark: Train ΔR's forward bypass against ComfyUI's built-in LoRA training mechanism.

Both train the same whole-weight targets (the 'paper' preset of the
architecture; fused q/k/v weights taken whole, since the built-in mechanism
has no row slices) at the same rank, on a model built from ComfyUI's own
classes, with the same fixed inputs, MSE loss, AdamW and fp32:

* qr_bypass: what Train ΔR runs: `QRAdapter` forward hooks (y += (x ΔRᵀ) Qᵀ),
  base parameters frozen, the blocks wrapped by the node's `trainable_blocks`
  (clones of block inputs that ComfyUI's blocks update in place);
* comfy_lora_wrapper: what `TrainLoraNode` runs: a `LoraDiff` weight wrapper
  per target through `ModelPatcher.add_weight_wrapper`, which rebuilds
  W + up·down on every forward. On FLUX it also gets the node's block
  handling: in fp32, or without checkpointing, the built-in trainer stops
  on FLUX's in-place block updates (ComfyUI 0.3.64; it runs only with its
  defaults, bf16 and gradient checkpointing).

`--checkpointing` turns on gradient checkpointing in both: the node's for
qr_bypass, the built-in trainer's (its default) for the baseline.

Each mechanism runs in a fresh process so that peak memory is its own: on
CUDA `torch.cuda.max_memory_allocated` during the steps, on the CPU the
growth of the process's peak RSS from before the first step (coarser: memory
freed while building the model can be reused without growing the RSS). Step time is the median over the timed steps,
wall and process-CPU (on a shared CPU the latter suffers less from other
load). Results go to `<out-dir>/train_step-<machine>[-<size>].json` and `.md`.

    COMFYUI_PATH=/path/to/ComfyUI python bench/train_step.py            # small SD3, SDXL and FLUX on the CPU
    COMFYUI_PATH=... python bench/train_step.py --device cuda --size full   # full-size SDXL and FLUX
    COMFYUI_PATH=... python bench/train_step.py --size full --arch sdxl --side 32 --threads 2   # full SDXL, CPU
    COMFYUI_PATH=... python bench/train_step.py --quick --out-dir /tmp/x    # tiny, CI smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "comfyui"))  # the model fixture
from comfy_models import PACK_DIR, build, comfy_setup, pack_module  # noqa: E402
from qr_core.machine import machine_info  # noqa: E402

MECHANISMS = ("qr_bypass", "comfy_lora_wrapper")

LATENT = {"sd3": (16, 32), "sdxl": (4, 32), "flux": (16, 32)}  # channels, side
CONTEXT = {"sd3": 256, "sdxl": 256, "flux": 256}


def inputs(arch: str, patcher, device, size: str, side_override: int | None = None):
    import torch

    g = torch.Generator().manual_seed(1)
    ch, side = LATENT[arch]
    if size == "full":
        side, ctx = 128, (2048 if arch == "sdxl" else 4096)
    else:
        ctx = CONTEXT[arch] if size == "small" else 32
    side = side_override or side
    dtype = next(patcher.model.diffusion_model.parameters()).dtype
    x = torch.randn(1, ch, side, side, generator=g).to(device, dtype)
    kw = {"context": torch.randn(1, 77 if size == "full" else 32, ctx, generator=g).to(device, dtype)}
    cfg = patcher.model.model_config.unet_config
    if arch == "sd3":
        kw["y"] = torch.randn(1, cfg["adm_in_channels"], generator=g).to(device, dtype)
    elif arch == "sdxl":
        kw["y"] = torch.randn(1, cfg["adm_in_channels"], generator=g).to(device, dtype)
    else:
        kw["y"] = torch.randn(1, cfg["vec_in_dim"], generator=g).to(device, dtype)
        kw["guidance"] = torch.full((1,), 3.5, device=device)
    t = torch.full((1,), 0.5 if arch in ("sd3", "flux") else 500.0, device=device)
    target = torch.randn(x.shape, generator=g).to(device, dtype)
    return x, t, kw, target


def worker(opts) -> dict:
    import torch

    device = torch.device(opts.device)
    torch.set_num_threads(opts.threads)
    pack = comfy_setup(opts.device)
    qr_core = pack_module(pack, "qr_core")
    trainer = pack_module(pack, "nodes.services.trainer")
    import comfy.model_management
    import comfy.weight_adapter

    patcher = build(opts.arch, opts.size, device)
    dm = patcher.model.diffusion_model
    shapes = {k: tuple(v.shape) for k, v in dm.state_dict().items()}
    paper = qr_core.select_targets(shapes, "paper")
    keys = sorted({t.key for t in paper})
    whole = qr_core.TargetSet(paper.arch, "bench", tuple(qr_core.Target(k[:-len(".weight")], k) for k in keys),
                              None, {k: shapes[k] for k in keys})
    x, t, kw, target = inputs(opts.arch, patcher, device, opts.size, opts.side)
    params: list = []
    contexts = []
    if opts.mechanism == "qr_bypass":
        weights = dict(dm.state_dict())
        q, _ = qr_core.decompose(lambda k: weights[k], whole, qr_core.DecomposeSettings(rank=opts.rank),
                                 device=device)
        basis = qr_core.Basis(whole, qr_core.DecomposeSettings(rank=opts.rank), q, {}, "", "")
        adapter = qr_core.QRAdapter(basis, device=device)
        params = adapter.trainable()
        contexts = [adapter.attached(dm), qr_core.frozen(patcher.model),
                    trainer.trainable_blocks(trainer.transformer_blocks(dm), opts.checkpointing)]
        model_fn = dm
    else:
        if opts.arch == "flux":
            # FLUX's blocks update their inputs in place, which stops the built-in trainer in fp32 or without
            # its checkpointing (ComfyUI 0.3.64), so the baseline gets the node's own block handling.
            contexts = [trainer.trainable_blocks(trainer.transformer_blocks(dm), opts.checkpointing)]
        elif opts.checkpointing:  # the built-in trainer's own checkpointing (its default)
            import comfy_extras.nodes_train as nodes_train

            for m in nodes_train.find_all_highest_child_module_with_forward(dm):
                nodes_train.patch(m)
        for k in keys:
            w = dm.get_parameter(k)
            lora = comfy.weight_adapter.LoRAAdapter.create_train(w, rank=opts.rank, alpha=1.0).to(device)
            params += list(lora.parameters())
            patcher.add_weight_wrapper("diffusion_model." + k, lora)
        patcher.model.requires_grad_(False)
        params = [p for p in params if p.requires_grad]
        comfy.model_management.load_models_gpu([patcher], memory_required=1e20, force_full_load=True)
        model_fn = patcher.model.diffusion_model
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model_fn(x, t, **kw)
        loss = torch.nn.functional.mse_loss(out.float(), target.float())
        loss.backward()
        opt.step()
        return float(loss)

    for c in contexts:
        c.__enter__()
    try:
        # Memory is measured from before the first step: gradients, optimizer
        # state, saved activations and rebuilt weights all count.
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base_mem = torch.cuda.memory_allocated()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        for _ in range(opts.warmup):
            step()
        walls, cpus = [], []
        for _ in range(opts.steps):
            w0, c0 = time.perf_counter(), time.process_time()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base_mem
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    finally:
        for c in reversed(contexts):
            c.__exit__(None, None, None)
    n_params = sum(p.numel() for p in params)
    return {"mechanism": opts.mechanism, "arch": opts.arch, "size": opts.size, "rank": opts.rank,
            "targets": len(keys), "trainable_params": n_params,
            "step_wall_s": statistics.median(walls), "step_cpu_s": statistics.median(cpus),
            "peak_extra_bytes": int(peak), "memory_measure": "cuda_max_allocated" if device.type == "cuda"
            else "rss_peak_growth"}


def run_worker(opts, arch: str, mechanism: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", mechanism, "--arch", arch, "--size", opts.size,
           "--device", opts.device, "--rank", str(opts.rank), "--steps", str(opts.steps),
           "--warmup", str(opts.warmup), "--threads", str(opts.threads)] + (
               ["--side", str(opts.side)] if opts.side else []) + (
               ["--checkpointing"] if opts.checkpointing else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{arch}/{mechanism} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(results: list[dict], opts, machine: str) -> str:
    lines = [f"# Train-step benchmark: {machine}", "",
             f"ComfyUI model classes, size '{opts.size}', latent side {opts.side or ('128' if opts.size == 'full' else '32')}, "
             f"rank {opts.rank}, fp32 on the CPU / bf16 on CUDA, "
             f"gradient checkpointing {'on' if opts.checkpointing else 'off'}, "
             f"{opts.steps} timed steps after {opts.warmup} warm-up, {opts.threads} thread(s); "
             f"load average at start {os.getloadavg()[0]:.1f}.", "",
             "| arch | targets | mechanism | trainable | step wall | step CPU | peak extra memory |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['arch']} | {r['targets']} | {r['mechanism']} | {r['trainable_params']:,} | "
                     f"{r['step_wall_s'] * 1000:.1f} ms | {r['step_cpu_s'] * 1000:.1f} ms | "
                     f"{r['peak_extra_bytes'] / 2**20:.1f} MiB |")
    lines += ["", "Ratios (qr_bypass / comfy_lora_wrapper; targets ≤ 1.05 time, ≤ 1.0 memory):", "",
              "| arch | step wall | step CPU | peak extra memory |", "|---|---|---|---|"]
    for arch in dict.fromkeys(r["arch"] for r in results):
        a = {r["mechanism"]: r for r in results if r["arch"] == arch}
        if set(a) == set(MECHANISMS):
            q, c = a["qr_bypass"], a["comfy_lora_wrapper"]
            mem = (f"{q['peak_extra_bytes'] / c['peak_extra_bytes']:.2f}×" if c["peak_extra_bytes"] > 0 else "—")
            lines.append(f"| {arch} | {q['step_wall_s'] / c['step_wall_s']:.2f}× | "
                         f"{q['step_cpu_s'] / c['step_cpu_s']:.2f}× | {mem} |")
    lines += ["", "Peak extra memory on the CPU is the growth of the process's peak RSS during the timed steps "
              "(from before the first step; coarse: memory freed while building the model is reused without "
              "growing the RSS); on CUDA, max_memory_allocated above the memory held before the first step."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", nargs="+", default=None, help="sd3, sdxl, flux")
    ap.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--side", type=int, default=None, help="latent side (default 128 at full size, else 32)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpointing", action="store_true",
                    help="gradient checkpointing in both mechanisms (the built-in trainer's default)")
    ap.add_argument("--quick", action="store_true", help="tiny SD3, 3 steps: a smoke test")
    ap.add_argument("--out-dir", default=str(PACK_DIR / "bench" / "results"))
    ap.add_argument("--worker", choices=MECHANISMS, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.worker:
        opts.mechanism = opts.worker
        opts.arch = opts.arch[0]
        print(json.dumps(worker(opts)))
        return
    if opts.quick:
        opts.size, opts.steps, opts.warmup, opts.rank = "tiny", 3, 1, 4
        opts.arch = opts.arch or ["sd3"]
    archs = opts.arch or (["sdxl", "flux"] if opts.size == "full" else ["sd3", "sdxl", "flux"])
    results = []
    for arch in archs:
        for mech in MECHANISMS:
            r = run_worker(opts, arch, mech)
            print(json.dumps(r), flush=True)
            results.append(r)
    machine = machine_info(opts.device)["slug"]
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine, "platform": platform.platform(), "python": platform.python_version(),
            "settings": {k: v for k, v in vars(opts).items() if k not in ("worker", "out_dir")}, "results": results}
    stem = f"train_step-{machine}" + ("" if opts.size == "small" else f"-{opts.size}")
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report(results, opts, machine))
    print(report(results, opts, machine))


if __name__ == "__main__":
    main()
