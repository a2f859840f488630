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
  W + up·down on every forward.

Each mechanism runs in a fresh process so that peak memory is its own: on
CUDA `torch.cuda.max_memory_allocated` during the steps, on the CPU the
growth of the process's peak RSS from before the first step (coarser: memory
freed while building the model can be reused without growing the RSS). Step time is the median over the timed steps,
wall and process-CPU (on a shared CPU the latter suffers less from other
load). Results go to `<out-dir>/train_step-<machine>.json` and `.md`.

    COMFYUI_PATH=/path/to/ComfyUI python bench/train_step.py            # small SD3 + SDXL on the CPU
    COMFYUI_PATH=... python bench/train_step.py --device cuda --size full   # full-size SDXL and FLUX
    COMFYUI_PATH=... python bench/train_step.py --quick --out-dir /tmp/x    # tiny, CI smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
MECHANISMS = ("qr_bypass", "comfy_lora_wrapper")

# Model configs for ComfyUI's classes. "small": CPU-sized members of the real
# architectures; "full": the released models' sizes (GPU only).
CONFIGS = {
    "sd3": {
        "small": dict(in_channels=16, out_channels=16, depth=8, patch_size=2, pos_embed_max_size=64,
                      adm_in_channels=256, num_patches=4096, pos_embed_scaling_factor=None, qk_norm=None,
                      x_block_self_attn_layers=[], context_embedder_config={
                          "target": "torch.nn.Linear", "params": {"in_features": 256, "out_features": 512}}),
        "tiny": dict(in_channels=16, out_channels=16, depth=2, patch_size=2, pos_embed_max_size=32,
                     adm_in_channels=32, num_patches=1024, pos_embed_scaling_factor=None, qk_norm=None,
                     x_block_self_attn_layers=[], context_embedder_config={
                         "target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 128}}),
    },
    "sdxl": {
        "small": dict(use_linear_in_transformer=True, use_temporal_attention=False, use_temporal_resblock=False,
                      in_channels=4, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2],
                      transformer_depth=[1, 2], transformer_depth_output=[1, 1, 2, 2], transformer_depth_middle=2,
                      num_head_channels=64, num_heads=-1, use_spatial_transformer=True, image_size=32, legacy=False,
                      context_dim=256, model_channels=128, adm_in_channels=256 + 1536, num_classes="sequential"),
    },
    "flux": {
        "small": dict(image_model="flux", guidance_embed=True, in_channels=64, out_channels=64, vec_in_dim=256,
                      context_in_dim=256, hidden_size=512, mlp_ratio=4.0, num_heads=8, depth=2,
                      depth_single_blocks=4, axes_dim=[16, 24, 24], theta=10000, patch_size=2, qkv_bias=True),
    },
}
LATENT = {"sd3": (16, 32), "sdxl": (4, 32), "flux": (16, 32)}  # channels, side
CONTEXT = {"sd3": 256, "sdxl": 256, "flux": 256}


def machine_name(device: str) -> str:
    if device == "cuda":
        import torch

        return "cuda-" + torch.cuda.get_device_name().lower().replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"


def _comfy_setup(device: str):
    comfy_path = os.environ.get("COMFYUI_PATH")
    if not comfy_path:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    sys.path.insert(0, str(Path(comfy_path).resolve()))
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    import nodes

    # The pack as ComfyUI loads it, so the benchmark runs the node's own code.
    asyncio.run(nodes.load_custom_node(str(PACK_DIR)))
    return sys.modules[str(PACK_DIR).replace(".", "_x_")]


def build(arch: str, size: str, device):
    import torch
    import comfy.model_patcher
    import comfy.supported_models

    cls = {"sd3": comfy.supported_models.SD3, "sdxl": comfy.supported_models.SDXL,
           "flux": comfy.supported_models.Flux}[arch]
    if size == "full":
        config = cls({**cls.unet_config, **FULL_UNET[arch]})
    else:
        config = cls(dict(CONFIGS[arch][size]))
        if arch == "sdxl":
            config.unet_config.update(num_head_channels=64, num_heads=-1)
    config.set_inference_dtype(torch.float32 if device.type == "cpu" else torch.bfloat16, None)
    g = torch.Generator().manual_seed(0)
    model = config.get_model({}, device=device)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g).to(device, p.dtype) / p[0].numel() ** 0.5)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


# Full-size unet configs (the released models' shapes) for the device run.
FULL_UNET = {
    "sdxl": dict(model_channels=320, use_linear_in_transformer=True, transformer_depth=[0, 0, 2, 2, 10, 10],
                 context_dim=2048, adm_in_channels=2816, use_temporal_attention=False, in_channels=4,
                 out_channels=4, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10,
                 num_classes="sequential", use_spatial_transformer=True, image_size=32, legacy=False,
                 num_head_channels=64, num_heads=-1, use_temporal_resblock=False),
    "flux": dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                 mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                 theta=10000, patch_size=2, qkv_bias=True),
}


def inputs(arch: str, patcher, device, size: str):
    import torch

    g = torch.Generator().manual_seed(1)
    ch, side = LATENT[arch]
    if size == "full":
        side, ctx = 128, (2048 if arch == "sdxl" else 4096)
    else:
        ctx = CONTEXT[arch] if size == "small" else 32
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
    pack = _comfy_setup(opts.device)
    qr_core = sys.modules[pack.__name__ + ".qr_core"]
    trainer = sys.modules[pack.__name__ + ".nodes.trainer"]
    import comfy.model_management
    import comfy.weight_adapter

    patcher = build(opts.arch, opts.size, device)
    dm = patcher.model.diffusion_model
    shapes = {k: tuple(v.shape) for k, v in dm.state_dict().items()}
    paper = qr_core.select_targets(shapes, "paper")
    keys = sorted({t.key for t in paper})
    whole = qr_core.TargetSet(paper.arch, "bench", tuple(qr_core.Target(k[:-len(".weight")], k) for k in keys),
                              None, {k: shapes[k] for k in keys})
    x, t, kw, target = inputs(opts.arch, patcher, device, opts.size)
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
                    trainer.trainable_blocks(trainer.transformer_blocks(dm), False)]
        model_fn = dm
    else:
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
           "--warmup", str(opts.warmup), "--threads", str(opts.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{arch}/{mechanism} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(results: list[dict], opts, machine: str) -> str:
    lines = [f"# Train-step benchmark: {machine}", "",
             f"ComfyUI model classes, size '{opts.size}', rank {opts.rank}, fp32 on the CPU / bf16 on CUDA, "
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
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
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
    archs = opts.arch or (["sdxl", "flux"] if opts.size == "full" else ["sd3", "sdxl"])
    results = []
    for arch in archs:
        for mech in MECHANISMS:
            r = run_worker(opts, arch, mech)
            print(json.dumps(r), flush=True)
            results.append(r)
    machine = machine_name(opts.device)
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine, "platform": platform.platform(), "python": platform.python_version(),
            "settings": {k: v for k, v in vars(opts).items() if k not in ("worker", "out_dir")}, "results": results}
    (out / f"train_step-{machine}.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / f"train_step-{machine}.md").write_text(report(results, opts, machine))
    print(report(results, opts, machine))


if __name__ == "__main__":
    main()
