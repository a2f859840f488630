"""Dynamic VRAM check: Train ΔR, Merge ΔR (added and K-LoRA) and λ over Steps on a model ComfyUI loads as a ModelPatcherDynamic.

Dynamic VRAM (ComfyUI ≥ 0.12 with comfy-aimdo, the default on NVIDIA) keeps weights in RAM, mapped from the
file, and casts them per layer into reused GPU buffers. ComfyUI builds a plain ModelPatcher wherever the load
device is a CPU, so only a GPU can run this. Each step runs on a tiny SD3 written to a safetensors file and loaded
by ComfyUI's Load Diffusion Model path twice, with and without dynamic VRAM, and compares the two:

- Train ΔR: losses and ΔR equal within float tolerance; no parameter or buffer of the shared model gets new
  memory (no copy of the frozen weights); the peak resident memory of the run against the file's size;
- Merge ΔR: the sampled latent equal (patches applied at cast time);
- K-LoRA (Merge ΔR's merge_mode): the sampled latent equal (its per-step choice reaches the layers through
  weight wrappers, which dynamic VRAM calls at cast time; a cast reused across steps would show here);
- λ over Steps: the sampled latent equal (ComfyUI samples hooks on a non-dynamic copy it reloads from the file);
  the same model without a reload path (as GGUF loaders leave it) is refused by the node with the named error,
  where ComfyUI's own guider would fail inside sampling;
- FP8 backward: on a scaled-fp8 file (quantized Linear layers, which compute in fp8 only where the GPU can),
  Train ΔR with `training_fp8_bwd` left on by the built-in trainer gives the ΔR it gives with it off.

    COMFYUI_PATH=/path/to/ComfyUI python bench/dynamic_vram.py --device cuda --out-dir $OUT
    COMFYUI_PATH=... python bench/dynamic_vram.py --device cpu --quick   # smoke run: no dynamic model, same steps

Exit status 1 when a check fails (or, on CUDA, when no dynamic model could be built).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path


def start_aimdo() -> str | None:
    """comfy-aimdo's first step, before torch is imported, as ComfyUI's main.py takes it; None when done."""
    try:
        import comfy_aimdo.control
    except ImportError as e:
        return f"comfy-aimdo is not installed ({e})"
    for kwargs in ({"simple_vram_headroom": None}, {}):
        try:
            comfy_aimdo.control.init(**kwargs)
            return None
        except TypeError:
            continue
    return "comfy_aimdo.control.init takes neither protocol"


def enable_dynamic_vram() -> str | None:
    """main.py's second step: devices registered, dynamic patchers made the default; None when enabled."""
    import comfy.memory_management
    import comfy.model_management
    import comfy.model_patcher
    import comfy_aimdo.control
    from comfy.cli_args import args

    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        return "this ComfyUI has no ModelPatcherDynamic"
    devices = comfy.model_management.get_all_torch_devices()
    headroom = int(getattr(args, "vram_headroom", 0) * 1024 ** 3)
    try:
        ok = comfy_aimdo.control.init_devices((d.index, headroom) for d in devices)
    except TypeError:
        ok = comfy_aimdo.control.init_devices(d.index for d in devices)
    if not ok:
        return "comfy_aimdo.control.init_devices failed"
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
    return None


def peak_rss_reset() -> None:
    """Linux: reset the process's peak resident set (VmHWM) to the current one."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def storages(module) -> dict:
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return {name: (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for name, t in tensors}


def conds(arch: str = "sd3", seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        latent = torch.randn(1, 16, 8, 8, generator=g)
        cond = [[torch.randn(1, 6, 32, generator=g), {"pooled_output": torch.randn(1, 32, generator=g)}]]
    return latent, cond


def load(path: Path, dynamic: bool):
    """Load Diffusion Model's path (comfy.sd.load_diffusion_model, which records how to reload the file)."""
    import comfy.sd
    import torch

    kwargs = {}
    if not dynamic and "disable_dynamic" in inspect.signature(comfy.sd.load_diffusion_model).parameters:
        kwargs["disable_dynamic"] = True
    with torch.inference_mode():  # as ComfyUI's executor runs the loader
        return comfy.sd.load_diffusion_model(str(path), **kwargs)


def scaled_fp8(state: dict, scale: float = 2.0) -> dict:
    """The state dict as an old-style scaled-fp8 release stores it (every Linear weight fp8 with its scale)."""
    import torch

    out = {"scaled_fp8": torch.tensor([], dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        layer = key[: -len(".weight")]
        if key.endswith(".weight") and value.ndim == 2 and layer + ".bias" in state:
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[layer + ".scale_weight"], out[layer + ".scale_input"] = torch.tensor(scale), torch.tensor(1.0)
        else:
            out[key] = value
    return out


def comfyui_version() -> str:
    try:
        import comfyui_version
        return comfyui_version.__version__
    except ImportError:
        return "unknown"


def close(a, b, rtol=1e-3, atol=1e-5) -> tuple[bool, float]:
    import torch

    a, b = torch.as_tensor(a).float().cpu(), torch.as_tensor(b).float().cpu()
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol)), float((a - b).abs().max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=4, help="training steps per run")
    ap.add_argument("--quick", action="store_true", help="2 training steps (the CI smoke test)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out-dir", default="bench/results")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.steps = 2

    why_not = start_aimdo() if opts.device == "cuda" else "a CPU run: ComfyUI builds no dynamic patcher on a CPU"
    from comfy_models import comfy_setup, model_config, pack_module, random_model  # imports torch

    pack = comfy_setup(opts.device)
    if why_not is None:
        why_not = enable_dynamic_vram()
    import comfy.hooks
    import comfy.model_management
    import comfy.sample
    import nodes
    import safetensors.torch
    import torch
    from qr_core.machine import machine_info

    if opts.threads:
        torch.set_num_threads(opts.threads)

    checks: dict[str, dict] = {}

    def check(name: str, ok: bool, **detail):
        checks[name] = {"ok": bool(ok), **detail}
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")

    folder = Path(tempfile.mkdtemp(prefix="qr-dynamic-vram-"))
    path = folder / "tiny_sd3.safetensors"
    source = random_model(model_config("sd3", "tiny"), torch.device("cpu"), seed=3, inference_mode=False)
    state = {k: v.detach().contiguous() for k, v in source.model.diffusion_model.state_dict().items()}
    safetensors.torch.save_file(state, str(path))
    file_mib = path.stat().st_size / 2 ** 20
    dynamic, plain = load(path, True), load(path, False)
    is_dynamic = bool(getattr(dynamic, "is_dynamic", lambda: False)())
    check("dynamic model built", is_dynamic or opts.device == "cpu", is_dynamic=is_dynamic,
          patcher=type(dynamic).__name__, why_not=why_not)

    node = nodes.NODE_CLASS_MAPPINGS
    basis = node["QRLoRADecompose"].execute(plain, 4, "paper", "", "fast", False)[0]
    latent, cond = conds()
    train_args = dict(steps=opts.steps, learning_rate=1e-2, optimizer="AdamW", batch_size=1, seed=0,
                      timestep_sampling="uniform", loss_space="native", training_dtype="fp32",
                      gradient_checkpointing=False, mode="ΔR only", triangular=False, trigger_words="",
                      save_name="", save_every=0)
    noise = comfy.sample.prepare_noise(latent, 0)

    def sample(model, positive, negative):
        with torch.inference_mode():
            return comfy.sample.sample(model, noise, 6, 2.0, "euler", "normal", positive, negative, latent, seed=0,
                                       disable_pbar=True).float().cpu()

    # A user samples before training: weights cast during inference must not reach training's autograd.
    same, diff = close(sample(dynamic, cond, cond), sample(plain, cond, cond))
    check("sampling: same sample", same, max_abs_diff=diff)
    runs = {}
    for name, model in (("plain", plain), ("dynamic", dynamic)):
        before = storages(model.model)
        peak_rss_reset()
        rss0, t0 = rss_kib("VmRSS"), time.perf_counter()
        with torch.inference_mode():
            out = node["QRLoRATrainDelta"].execute(model, basis, {"samples": latent}, cond, **train_args)
        runs[name] = {"delta": out[0], "loss": out[2]["loss"], "seconds": time.perf_counter() - t0,
                      "peak_rss_growth_mib": (rss_kib("VmHWM") - rss0) / 1024, "copied": storages(model.model) != before}
    ok_loss, loss_diff = close(runs["dynamic"]["loss"], runs["plain"]["loss"])
    delta_diffs = [close(runs["dynamic"]["delta"].delta[k], d)[1] for k, d in runs["plain"]["delta"].delta.items()]
    ok_delta = all(close(runs["dynamic"]["delta"].delta[k], d)[0] for k, d in runs["plain"]["delta"].delta.items())
    check("train: same losses and ΔR", ok_loss and ok_delta, max_loss_diff=loss_diff, max_delta_diff=max(delta_diffs))
    check("train: no frozen weight copied", not runs["dynamic"]["copied"] and not runs["plain"]["copied"],
          file_mib=round(file_mib, 2), **{f"{k}_peak_rss_growth_mib": round(r["peak_rss_growth_mib"], 1)
                                          for k, r in runs.items()},
          **{f"{k}_s": round(r["seconds"], 2) for k, r in runs.items()})

    delta = runs["plain"]["delta"]
    merged = {name: node["QRLoRAMergeDeltas"].execute(m, content=delta, style=None, lambda_content=1.0,
                                                      lambda_style=1.0, lambda_extra_1=1.0, lambda_extra_2=1.0)[0]
              for name, m in (("plain", plain), ("dynamic", dynamic))}
    same, diff = close(sample(merged["dynamic"], cond, cond), sample(merged["plain"], cond, cond))
    check("merge: same sample", same, max_abs_diff=diff)

    other = pack_module(pack, "qr_core.adapters.delta").random_delta(basis, 7, 0.05, "style")
    klora = {name: node["QRLoRAMergeDeltas"].execute(m, content=delta, style=other, lambda_content=1.0,
                                                     lambda_style=1.0, lambda_extra_1=1.0, lambda_extra_2=1.0,
                                                     merge_mode="K-LoRA s*", klora_layers="all")[0]
             for name, m in (("plain", plain), ("dynamic", dynamic))}
    same, diff = close(sample(klora["dynamic"], cond, cond), sample(klora["plain"], cond, cond))
    check("K-LoRA: same sample", same, max_abs_diff=diff)

    def hooks(model):
        return node["QRLoRAScheduleHooks"].execute(model, content=delta, style=delta, lambda_content=1.0,
                                                   lambda_style=0.5, lambda_extra_1=1.0, lambda_extra_2=1.0,
                                                   schedule="content-early-style-late", custom_schedule="")[0]
    scheduled = {}
    for name, model in (("plain", plain), ("dynamic", dynamic)):
        h = hooks(model)
        scheduled[name] = sample(model, comfy.hooks.set_hooks_for_conditioning(cond, h),
                                 comfy.hooks.set_hooks_for_conditioning(cond, h))
    same, diff = close(scheduled["dynamic"], scheduled["plain"])
    check("λ over steps: same sample", same, max_abs_diff=diff)

    if is_dynamic:  # a loader that leaves no way to reload the file (GGUF and other custom loaders)
        orphan = dynamic.clone()
        orphan.cached_patcher_init = None
        error = pack_module(pack, "qr_core").RuntimeSupportError
        try:
            hooks(orphan)
            check("λ over steps: no reload path is refused by name", False)
        except error as e:
            check("λ over steps: no reload path is refused by name", "--disable-dynamic-vram" in str(e))
        h = hooks(dynamic)
        try:  # what the node spares the user: ComfyUI's own failure inside sampling
            sample(orphan, comfy.hooks.set_hooks_for_conditioning(cond, h), comfy.hooks.set_hooks_for_conditioning(cond, h))
            check("ComfyUI itself fails without a reload path", False)
        except RuntimeError as e:
            check("ComfyUI itself fails without a reload path", True, error=str(e)[:160])
    if hasattr(comfy.model_management, "training_fp8_bwd"):
        fp8_path = folder / "tiny_sd3_scaled_fp8.safetensors"
        safetensors.torch.save_file(scaled_fp8(state), str(fp8_path))
        fp8 = {}
        for name, flag in (("off", False), ("left on", True)):  # the same (non-dynamic) load: only the switch differs
            model = load(fp8_path, False)
            comfy.model_management.training_fp8_bwd = flag
            fp8_basis = node["QRLoRADecompose"].execute(model, 4, "paper", "", "fast", False)[0]
            with torch.inference_mode():
                fp8[name] = node["QRLoRATrainDelta"].execute(model, fp8_basis, {"samples": latent}, cond, **train_args)
            restored = comfy.model_management.training_fp8_bwd is flag
        comfy.model_management.training_fp8_bwd = False
        a, b = fp8["left on"][0].delta, fp8["off"][0].delta
        check("fp8 backward: ΔR as with the switch off", all(close(a[k], d)[0] for k, d in b.items()) and restored,
              max_delta_diff=max(close(a[k], d)[1] for k, d in b.items()), switch_restored=restored,
              fp8_compute=bool(comfy.model_management.supports_fp8_compute(comfy.model_management.get_torch_device())))
    comfy.model_management.unload_all_models()

    machine = machine_info(opts.device)
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine, "comfyui_version": comfyui_version(), "dynamic": is_dynamic, "why_not": why_not,
              "checks": checks}
    (out / f"dynamic_vram-{machine['slug']}.json").write_text(json.dumps(result, indent=2, default=str))
    failed = [k for k, v in checks.items() if not v["ok"]]
    print("dynamic VRAM check:", "all passed" if not failed else f"FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
