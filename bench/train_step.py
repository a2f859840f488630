"""Train-step benchmark: Train ΔR's forward bypass against ComfyUI's built-in LoRA training mechanism and the floor.

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
  defaults, bf16 and gradient checkpointing);
* comfy_bypass: `TrainLoraNode`'s `bypass_mode` (ComfyUI 0.33 on): the same
  LoRA adapters through `BypassInjectionManager` forward hooks, which add
  up(down(x)) to each target's output and rebuild no weight: the strongest
  baseline users have. Left out (with the loop step below) where ComfyUI has none.

* floor: the frozen model's forward and the backward to its input, with no
  adapter and no parameter gradient: what any adapter training pays at least.

The three above call the diffusion model directly. Two more run a whole step of
the built-in trainer's loop, `TrainSampler` from comfy_extras/nodes_train.py
(in 0.3.64 and 0.8 alike; `TrainLoraNode` runs it through a guider):
noise and a noise level drawn (`percent_to_sigma`), `noise_scaling`, the
forward through ComfyUI's guider (conds, `c_in` scaling, `apply_model`), MSE
on the denoised x0, backward and the optimizer step. ComfyUI's own sampling
path is prepared once, as the node's `guider.sample` prepares it before its loop:

* comfy_train_sampler: the built-in trainer as `TrainLoraNode` runs it: its
  `LoRAAdapter` weight wrappers on the same targets at the same rank, one
  `TrainSampler` step per step (its console progress bar off);
* comfy_train_sampler_bypass: the same with the built-in trainer's bypass mode;
* qr_train_sampler: the same `TrainSampler` step with Train ΔR's bypass
  instead of the weight wrappers: the comparison of the two adapters inside
  one and the same training loop. (Train ΔR's own loop adds gradient
  clipping over the ΔR and draws its noise levels its own way; the node has
  no preview cost here: previews are not part of a training step.)

`--checkpointing` turns on gradient checkpointing in both: the node's for
qr_bypass, the built-in trainer's (its default) for the baseline.

Memory: each mechanism runs once alone in a fresh process, so that peak
memory is its own: on CUDA `torch.cuda.max_memory_allocated` during the
steps, on the CPU the growth of the process's peak RSS from before the first
step (coarser: memory freed while building the model can be reused without
growing the RSS). Time: the three run on their own models in one process,
in turn (A B C A B C …, `--pairs` rounds of the median of `--steps` steps
after a warm-up), so that a slow moment hits a whole round; ratios are taken
per round and reported as median (min–max). Results go to
`<out-dir>/train_step-<machine>[-<size>]-comfyui-<version>.json` and `.md`.

    COMFYUI_PATH=/path/to/ComfyUI python bench/train_step.py            # small SD3, SDXL and FLUX on the CPU
    COMFYUI_PATH=... python bench/train_step.py --device cuda --size full   # full-size SDXL and FLUX
    COMFYUI_PATH=... python bench/train_step.py --size full --arch sdxl --side 32 --threads 2 --separate  # CPU
    COMFYUI_PATH=... python bench/train_step.py --quick --out-dir /tmp/x    # tiny, CI smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from comfy_models import PACK_DIR, build, comfy_setup, pack_module  # this folder, as below
from paired import loadavg, spread
from qr_core.machine import machine_info  # noqa: E402

MECHANISMS = ("floor", "qr_bypass", "comfy_lora_wrapper", "comfy_bypass", "qr_train_sampler", "comfy_train_sampler",
              "comfy_train_sampler_bypass")
# A whole step of the built-in trainer's loop (TrainSampler), with the adapter of the mechanism named.
LOOP_ADAPTER = {"qr_train_sampler": "qr_bypass", "comfy_train_sampler": "comfy_lora_wrapper",
                "comfy_train_sampler_bypass": "comfy_bypass"}
# The built-in trainer's bypass mode (forward hooks instead of weight wrappers) exists from ComfyUI 0.33 on.
BYPASS_MECHANISMS = ("comfy_bypass", "comfy_train_sampler_bypass")
# Step-time ratios reported (numerator / denominator), where both ran.
RATIOS = (("qr_bypass", "comfy_lora_wrapper"), ("qr_bypass", "comfy_bypass"), ("qr_bypass", "floor"),
          ("comfy_lora_wrapper", "floor"), ("comfy_bypass", "floor"),
          ("qr_train_sampler", "comfy_train_sampler"), ("qr_train_sampler", "comfy_train_sampler_bypass"),
          ("comfy_train_sampler", "comfy_lora_wrapper"),
          ("qr_train_sampler", "floor"), ("comfy_train_sampler", "floor"), ("comfy_train_sampler_bypass", "floor"))
# Peak-memory ratios reported.
MEMORY_RATIOS = (("qr_bypass", "comfy_lora_wrapper"), ("qr_bypass", "comfy_bypass"), ("qr_bypass", "floor"),
                 ("qr_train_sampler", "comfy_train_sampler"), ("qr_train_sampler", "comfy_train_sampler_bypass"))


def bypass_available() -> bool:
    try:
        from comfy.weight_adapter.bypass import BypassInjectionManager  # noqa: F401
    except ImportError:
        return False
    return True

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


def conditioning(arch: str, patcher, kw: dict) -> list:
    """The inputs' context and pooled vector as a CONDITIONING (what CLIP Text Encode gives the trainer)."""
    cfg = patcher.model.model_config.unet_config
    pooled_width = {"sd3": cfg.get("adm_in_channels"), "sdxl": (cfg.get("adm_in_channels") or 0) - 1536,
                    "flux": cfg.get("vec_in_dim")}[arch]
    import torch

    g = torch.Generator().manual_seed(2)
    extra = {"pooled_output": torch.randn(1, pooled_width, generator=g).to(kw["context"])}
    if arch == "flux":
        extra["guidance"] = 3.5
    return [[kw["context"], extra]]


def prepared_guider(patcher, latent, positive: list):
    """ComfyUI's guider with its sampling path prepared, as TrainLoraNode's guider.sample() prepares it before
    it runs the TrainSampler loop: the model loaded, conds processed, the latent through process_latent_in.

    guider.sample() runs once with a sampler that only records what the loop would get; the guider's model
    and conds are then put back (sample() releases them on return) and the patcher marked as running again,
    so that TrainSampler steps can run one at a time. Returns (guider, extra_args, latent).
    """
    import torch
    import comfy.samplers
    import comfy_extras.nodes_custom_sampler as custom_sampler

    guider = custom_sampler.Guider_Basic(patcher)
    guider.set_conds(positive)
    seen = {}

    class Record(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            seen.update(inner_model=model_wrap.inner_model, conds=model_wrap.conds, extra_args=extra_args,
                        latent=latent_image)
            return torch.zeros_like(latent_image)

    guider.sample(torch.zeros_like(latent), latent, Record(), torch.ones(1), seed=0)
    guider.inner_model, guider.conds = seen["inner_model"], seen["conds"]
    patcher.pre_run()
    return guider, seen["extra_args"], seen["latent"]


def train_sampler_step(guider, extra_args: dict, latent, params: list, dtype):
    """One step of the built-in trainer's loop: TrainSampler.sample() with total_steps 1 (grad_acc 1, batch 1)."""
    import torch
    import comfy.utils
    import comfy_extras.nodes_train as nodes_train

    comfy.utils.PROGRESS_BAR_ENABLED = False  # the loop's console progress bar, not part of a step's work
    opt = torch.optim.AdamW(params, lr=1e-4)
    sampler = nodes_train.TrainSampler(torch.nn.MSELoss(), opt, batch_size=1, grad_acc=1, total_steps=1, seed=0,
                                       training_dtype=dtype)
    sigmas = torch.zeros(latent.shape[0])  # TrainSampler reads the dataset size from its length

    def step():
        losses = []
        sampler.loss_callback = losses.append
        sampler.sample(guider, sigmas, extra_args, None, torch.zeros_like(latent), latent)
        if latent.device.type == "cuda":
            torch.cuda.synchronize()
        return losses[-1]

    return step


def adapter_live(patcher, params: list, hooks: list | None = None) -> Callable[[], None]:
    """A check that the mechanism's adapter still acts: ComfyUI drops a model's weight wrappers when it unloads
    the model (e.g. to load another), which would time a step without its adapter; bypass hooks are ejected
    with the model's injections."""
    def check():
        if not params:
            return
        if hooks is not None:
            if not all(h.original_forward is not None for h in hooks):
                raise RuntimeError("ComfyUI ejected the built-in trainer's bypass hooks of a benchmark model")
            return
        wrapped = [m for m in patcher.model.diffusion_model.modules() if getattr(m, "weight_function", None)]
        if not wrapped:
            raise RuntimeError("ComfyUI unloaded a model of the benchmark: its LoRA weight wrappers are gone")
    return check


def trained_in_loop(params: list, also: Callable[[], None]) -> Callable[[], None]:
    """A check that the loop's steps reached the adapter: gradients flowed and the optimizer moved it."""
    before = [p.detach().clone() for p in params]

    def check():
        also()
        if not any(not b.equal(p.detach()) for b, p in zip(before, params)):
            raise RuntimeError("the training loop's steps left the adapter unchanged: no gradient reached it")
    return check


@dataclass
class Setup:
    """One mechanism ready to train on its own model: `step()` runs one training step."""
    step: Callable[[], float]
    contexts: list
    trainable_params: int
    targets: int
    check: Callable[[], None] = lambda: None


def setup(mechanism: str, opts, pack, device) -> Setup:
    """A fresh model of opts.arch with `mechanism` attached, its inputs and its optimizer."""
    import torch

    qr_core = pack_module(pack, "qr_core")
    trainer = pack_module(pack, "nodes.services.trainer")
    runtime = pack_module(pack, "nodes.services.training_runtime")
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
    in_loop, mechanism = mechanism in LOOP_ADAPTER, LOOP_ADAPTER.get(mechanism, mechanism)
    hooks = None
    # FLUX's blocks update their inputs in place, which stops the built-in trainer in fp32 or without its
    # checkpointing (ComfyUI 0.3.64), so the baseline and the floor get the node's own block handling too.
    flux_blocks = [trainer.trainable_blocks(trainer.transformer_blocks(dm), opts.checkpointing)] \
        if opts.arch == "flux" else []
    if mechanism == "qr_bypass":
        weights = dict(dm.state_dict())
        q, _ = qr_core.decompose(lambda k: weights[k], whole, qr_core.DecomposeSettings(rank=opts.rank),
                                 device=device)
        basis = qr_core.Basis(whole, qr_core.DecomposeSettings(rank=opts.rank), q, {}, "", "")
        adapter = qr_core.QRAdapter(basis, device=device)
        params = adapter.trainable()
        contexts = [adapter.attached(dm), qr_core.frozen(patcher.model),
                    trainer.trainable_blocks(trainer.transformer_blocks(dm), opts.checkpointing)]
        model_fn = dm
    elif mechanism == "floor":
        # What any adapter training pays at least: the frozen model's forward and the backward to its input,
        # with no adapter and no parameter gradient.
        x = x.detach().requires_grad_(True)
        contexts = [qr_core.frozen(patcher.model)] + flux_blocks
        model_fn = dm
    else:
        contexts = list(flux_blocks)
        if opts.checkpointing and opts.arch != "flux":  # the built-in trainer's own checkpointing (its default)
            import comfy_extras.nodes_train as nodes_train

            for m in nodes_train.find_all_highest_child_module_with_forward(dm):
                nodes_train.patch(m)
        # The built-in trainer's two ways (TrainLoraNode's setup): weight wrappers that rebuild
        # W + up·down per forward, or (bypass_mode, 0.33) forward hooks adding up(down(x)).
        bypass = None
        if mechanism == "comfy_bypass":
            from comfy.weight_adapter.bypass import BypassInjectionManager

            bypass = BypassInjectionManager()
        for k in keys:
            w = dm.get_parameter(k)
            lora = comfy.weight_adapter.LoRAAdapter.create_train(w, rank=opts.rank, alpha=1.0).to(device)
            params += list(lora.parameters())
            if bypass is not None:
                bypass.add_adapter("diffusion_model." + k, lora, strength=1.0)
            else:
                patcher.add_weight_wrapper("diffusion_model." + k, lora)
        patcher.model.requires_grad_(False)
        params = [p for p in params if p.requires_grad]
        if not in_loop:  # in the loop the guider loads the model
            comfy.model_management.load_models_gpu([patcher], memory_required=1e20, force_full_load=True)
        if bypass is not None:  # injected after loading, as TrainLoraNode injects them
            for injection in bypass.create_injections(patcher.model):
                injection.inject(patcher)
            hooks = list(bypass.hooks)
        model_fn = patcher.model.diffusion_model
    # ComfyUI's differentiable code paths (FLUX's RoPE without comfy-kitchen's kernel on 0.8), as Train ΔR
    # runs with; every mechanism gets them, so that all time the same model code.
    contexts.append(runtime.differentiable_model_code())
    live = (adapter_live(patcher, params) if mechanism == "comfy_lora_wrapper"
            else adapter_live(patcher, params, hooks) if mechanism == "comfy_bypass" else lambda: None)
    if in_loop:
        guider, extra_args, latent = prepared_guider(patcher, x.detach(), conditioning(opts.arch, patcher, kw))
        step = train_sampler_step(guider, extra_args, latent, params, dtype=x.dtype)
        return Setup(step, contexts, sum(p.numel() for p in params), len(keys), trained_in_loop(params, live))
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None

    def step():
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        x.grad = None
        out = model_fn(x, t, **kw)
        loss = torch.nn.functional.mse_loss(out.float(), target.float())
        loss.backward()
        if opt is not None:
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    return Setup(step, contexts, sum(p.numel() for p in params), len(keys), live)


def timed_steps(step, n: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of n steps."""
    walls, cpus = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def worker(opts) -> dict:
    """One mechanism alone in this process: its peak memory (and its standalone step time)."""
    import torch

    device = torch.device(opts.device)
    torch.set_num_threads(opts.threads)
    pack = comfy_setup(opts.device)
    s = setup(opts.mechanism, opts, pack, device)
    for c in s.contexts:
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
            s.step()
        s.check()
        wall, cpu = timed_steps(s.step, opts.steps)
        s.check()
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base_mem
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    finally:
        for c in reversed(s.contexts):
            c.__exit__(None, None, None)
    import comfyui_version

    return {"mechanism": opts.mechanism, "arch": opts.arch, "size": opts.size, "rank": opts.rank,
            "comfyui_version": comfyui_version.__version__, "bypass_available": bypass_available(),
            "targets": s.targets, "trainable_params": s.trainable_params,
            "alone_step_wall_s": wall, "alone_step_cpu_s": cpu,
            "peak_extra_bytes": int(peak), "memory_measure": "cuda_max_allocated" if device.type == "cuda"
            else "rss_peak_growth"}


def paired_worker(opts) -> dict:
    """Every mechanism on its own model in this one process, timed in turn (A B C A B C …): opts.pairs rounds
    after a warm-up, each round the median of opts.steps steps per mechanism. A slow moment of the machine
    then hits all of one round, and each round gives its own ratios."""
    import torch

    device = torch.device(opts.device)
    torch.set_num_threads(opts.threads)
    pack = comfy_setup(opts.device)
    setups = {m: setup(m, opts, pack, device) for m in opts.mechanisms}
    rounds = {m: [] for m in opts.mechanisms}
    for s in setups.values():
        for c in s.contexts:
            c.__enter__()
    try:
        for m, s in setups.items():
            for _ in range(opts.warmup):
                s.step()
        for _ in range(opts.pairs):
            for m, s in setups.items():
                rounds[m].append(timed_steps(s.step, opts.steps))
        for s in setups.values():  # every adapter acted in every round (none was dropped by an unload)
            s.check()
    finally:
        for s in reversed(list(setups.values())):
            for c in reversed(s.contexts):
                c.__exit__(None, None, None)
    return {"arch": opts.arch, "rounds": {m: {"wall_s": [w for w, _ in r], "cpu_s": [c for _, c in r]}
                                          for m, r in rounds.items()}}


def run_worker(opts, arch: str, mechanism: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", mechanism, "--arch", arch, "--size", opts.size,
           "--device", opts.device, "--rank", str(opts.rank), "--steps", str(opts.steps),
           "--warmup", str(opts.warmup), "--threads", str(opts.threads), "--pairs", str(opts.pairs)] + (
               ["--side", str(opts.side)] if opts.side else []) + (
               ["--checkpointing"] if opts.checkpointing else []) + ["--mechanisms", *opts.mechanisms]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{arch}/{mechanism} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(arch: str, alone: dict, paired: dict | None) -> dict:
    """Per mechanism: step time (paired rounds, or alone), memory (alone); and the per-round ratios."""
    def times(m: str, kind: str) -> list[float]:
        return paired["rounds"][m][f"{kind}_s"] if paired else [alone[m][f"alone_step_{kind}_s"]]

    rows = {m: {**r, "step_wall": spread(times(m, "wall")), "step_cpu": spread(times(m, "cpu"))}
            for m, r in alone.items()}
    ratios = {f"{a} / {b}": spread([x / y for x, y in zip(times(a, "wall"), times(b, "wall"))])
              for a, b in RATIOS if a in rows and b in rows}
    # Process CPU time per round too: on a machine shared with other work, wall time also counts the waits.
    cpu_ratios = {f"{a} / {b}": spread([x / y for x, y in zip(times(a, "cpu"), times(b, "cpu"))])
                  for a, b in RATIOS if a in rows and b in rows}
    memory = {f"{a} / {b}": (rows[a]["peak_extra_bytes"] / rows[b]["peak_extra_bytes"]
                             if rows[b]["peak_extra_bytes"] > 0 else None)
              for a, b in MEMORY_RATIOS if a in rows and b in rows}
    return {"arch": arch, "rounds": rows["floor"]["step_wall"]["n"], "paired": paired is not None,
            "mechanisms": rows, "time_ratios": ratios, "cpu_time_ratios": cpu_ratios, "memory_ratios": memory}


def fmt_spread(sp: dict | None, unit: str = "×", scale: float = 1.0, digits: int = 2) -> str:
    if sp is None:
        return "—"
    if sp["n"] == 1:
        return f"{sp['median'] * scale:.{digits}f}{unit}"
    return (f"{sp['median'] * scale:.{digits}f}{unit} ({sp['min'] * scale:.{digits}f}–"
            f"{sp['max'] * scale:.{digits}f})")


def report(results: list[dict], opts, machine: str) -> str:
    lines = [f"# Train-step benchmark: {machine}, ComfyUI {opts.comfyui_version}", "",
             f"ComfyUI model classes, size '{opts.size}', latent side {opts.side or ('128' if opts.size == 'full' else '32')}, "
             f"rank {opts.rank}, fp32 on the CPU / bf16 on CUDA, "
             f"gradient checkpointing {'on' if opts.checkpointing else 'off'}, {opts.threads} thread(s). "
             + (f"Step times: the {len(opts.mechanisms)} mechanisms on their own models in one process, timed in turn "
                f"(A B C … A B C …), {opts.pairs} rounds of the median of {opts.steps} steps after {opts.warmup} warm-up steps; "
                f"median (min–max) over the rounds, ratios per round. "
                if not opts.separate else f"Step times: each mechanism alone ({opts.steps} steps). ")
             + f"Memory: each mechanism alone in a fresh process. Load average {opts.load_start} at the start, "
               f"{opts.load_end} at the end.", "",
             "floor: the frozen model's forward and backward to its input, no adapter and no parameter gradient "
             "(what any adapter training pays at least). qr_bypass, comfy_lora_wrapper: the adapter's step on the "
             "diffusion model alone; comfy_bypass: the built-in trainer's bypass mode (ComfyUI ≥ 0.33: forward hooks "
             "adding up(down(x)), no weight rebuilt). comfy_train_sampler: a whole step of the built-in trainer "
             "(TrainLoraNode's TrainSampler loop through ComfyUI's guider, its LoRA weight wrappers); "
             "comfy_train_sampler_bypass: the same with its bypass mode; qr_train_sampler: the same "
             "loop step with Train ΔR's bypass.", "",
             "| arch | mechanism | targets | trainable | step wall | step CPU | peak extra memory |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for m, row in r["mechanisms"].items():
            lines.append(f"| {r['arch']} | {m} | {row['targets']} | {row['trainable_params']:,} | "
                         f"{fmt_spread(row['step_wall'], ' ms', 1000, 1)} | {fmt_spread(row['step_cpu'], ' ms', 1000, 1)} | "
                         f"{row['peak_extra_bytes'] / 2**20:.1f} MiB |")
    lines += ["", "Ratios of step wall time, median (min–max) over the rounds, and of peak extra memory "
              "(targets: QR ÷ built-in ≤ 1.05 time, ≤ 1.0 memory):", "",
              "| arch | QR ÷ built-in | QR ÷ built-in bypass | QR ÷ floor | built-in ÷ floor | memory QR ÷ built-in | "
              "memory QR ÷ built-in bypass | memory QR ÷ floor |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, mem = r["time_ratios"], r["memory_ratios"]
        f = (lambda v: "—" if v is None else f"{v:.2f}×")
        lines.append(f"| {r['arch']} | {fmt_spread(t.get('qr_bypass / comfy_lora_wrapper'))} | "
                     f"{fmt_spread(t.get('qr_bypass / comfy_bypass'))} | "
                     f"{fmt_spread(t.get('qr_bypass / floor'))} | {fmt_spread(t.get('comfy_lora_wrapper / floor'))} | "
                     f"{f(mem.get('qr_bypass / comfy_lora_wrapper'))} | {f(mem.get('qr_bypass / comfy_bypass'))} | "
                     f"{f(mem.get('qr_bypass / floor'))} |")
    lines += ["", "A whole step of the built-in trainer's loop (TrainSampler through ComfyUI's guider, as "
              "TrainLoraNode runs it), with each adapter:", "",
              "| arch | QR ÷ built-in, in the loop | the same in process CPU time | QR ÷ built-in bypass, in the loop | "
              "built-in loop ÷ its wrappers alone | "
              "QR in the loop ÷ floor | built-in loop ÷ floor | memory QR ÷ built-in, in the loop | "
              "memory QR ÷ built-in bypass, in the loop |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, c, mem = r["time_ratios"], r["cpu_time_ratios"], r["memory_ratios"]
        f = (lambda v: "—" if v is None else f"{v:.2f}×")
        lines.append(f"| {r['arch']} | {fmt_spread(t.get('qr_train_sampler / comfy_train_sampler'))} | "
                     f"{fmt_spread(c.get('qr_train_sampler / comfy_train_sampler'))} | "
                     f"{fmt_spread(t.get('qr_train_sampler / comfy_train_sampler_bypass'))} | "
                     f"{fmt_spread(t.get('comfy_train_sampler / comfy_lora_wrapper'))} | "
                     f"{fmt_spread(t.get('qr_train_sampler / floor'))} | {fmt_spread(t.get('comfy_train_sampler / floor'))} | "
                     f"{f(mem.get('qr_train_sampler / comfy_train_sampler'))} | "
                     f"{f(mem.get('qr_train_sampler / comfy_train_sampler_bypass'))} |")
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
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mechanism and round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=5, help="rounds of the interleaved timing")
    ap.add_argument("--separate", action="store_true",
                    help="no interleaved rounds (three models at once do not fit, e.g. full size on the CPU): "
                         "step times from each mechanism alone")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpointing", action="store_true",
                    help="gradient checkpointing in both mechanisms (the built-in trainer's default)")
    ap.add_argument("--mechanisms", nargs="+", choices=MECHANISMS, default=list(MECHANISMS),
                    help="which to run (floor always runs: every ratio has it); e.g. leave out the loop "
                         "mechanisms at full size, where five full-size models do not fit one GPU")
    ap.add_argument("--quick", action="store_true", help="tiny SD3, 2 rounds: a smoke test")
    ap.add_argument("--out-dir", default=str(PACK_DIR / "bench" / "results"))
    ap.add_argument("--worker", choices=MECHANISMS + ("paired",), help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    opts.mechanisms = ["floor"] + [m for m in MECHANISMS if m in opts.mechanisms and m != "floor"]
    if opts.worker:
        opts.mechanism = opts.worker
        opts.arch = opts.arch[0]
        print(json.dumps(paired_worker(opts) if opts.worker == "paired" else worker(opts)))
        return
    if opts.quick:
        opts.size, opts.steps, opts.warmup, opts.rank, opts.pairs = "tiny", 2, 1, 4, 2
        opts.arch = opts.arch or ["sd3"]
    archs = opts.arch or (["sdxl", "flux"] if opts.size == "full" else ["sd3", "sdxl", "flux"])
    opts.load_start = loadavg()
    results = []
    for arch in archs:
        alone = {"floor": run_worker(opts, arch, "floor")}
        if not alone["floor"]["bypass_available"]:  # before ComfyUI 0.33: the built-in trainer has no bypass mode
            opts.mechanisms = [m for m in opts.mechanisms if m not in BYPASS_MECHANISMS]
        alone.update({m: run_worker(opts, arch, m) for m in opts.mechanisms if m != "floor"})
        paired = None if opts.separate else run_worker(opts, arch, "paired")
        opts.comfyui_version = alone["floor"]["comfyui_version"]
        results.append(summarize(arch, alone, paired))
        print(json.dumps(results[-1]["time_ratios"]), flush=True)
    opts.load_end = loadavg()
    machine = machine_info(opts.device)["slug"]
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine, "platform": platform.platform(), "python": platform.python_version(),
            "settings": {k: v for k, v in vars(opts).items() if k not in ("worker", "out_dir")}, "results": results}
    stem = f"train_step-{machine}" + ("" if opts.size == "small" else f"-{opts.size}") + \
        f"-comfyui-{opts.comfyui_version}"
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report(results, opts, machine))
    print(report(results, opts, machine))


if __name__ == "__main__":
    main()
