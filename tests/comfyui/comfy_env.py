"""Tiny random-weight models of real ComfyUI architectures, built from ComfyUI's own classes."""

from __future__ import annotations

from contextlib import contextmanager

from comfyui_location import skip_or_fail_without_comfyui

skip_or_fail_without_comfyui("the tests against ComfyUI's runtime")

import comfy_models  # noqa: E402  (bench/: the one builder of random-weight ComfyUI models)
import torch  # noqa: E402

CPU = torch.device("cpu")


def tiny_model(arch: str, seed: int = 0, dtype=torch.float32, compute_dtype=None, **changes):
    """A ModelPatcher around a tiny random-weight model of `arch`, built (like ComfyUI's loaders) in inference mode.

    `changes` edit the architecture's config (e.g. hidden_size for a model of another size).
    """
    config = comfy_models.model_config(arch, "tiny", dtype, compute_dtype, **changes)
    return comfy_models.random_model(config, CPU, seed)


def latent_and_cond(arch: str, batch: int = 1, size: int = 8, seed: int = 0):
    """A fixed latent and a conditioning in ComfyUI's format (list of [cross-attn, extras]).

    Made in inference mode, as VAE Encode and CLIP Text Encode make them.
    """
    g = torch.Generator().manual_seed(seed)
    channels = 4 if arch in ("sd15", "sdxl") else 16
    with torch.inference_mode():
        latent = torch.randn(batch, channels, size, size, generator=g)
        context = torch.randn(1, 6, 32, generator=g)
        extra = {}
        if arch in ("sdxl", "sd3", "flux"):
            extra["pooled_output"] = torch.randn(1, 32, generator=g)
    if arch == "flux":
        extra["guidance"] = 3.5
    return {"samples": latent}, [[context, extra]]


TRAIN_DEFAULTS = dict(steps=30, learning_rate=1e-2, optimizer="AdamW", batch_size=1, seed=0,
                      timestep_sampling="uniform", loss_space="native", training_dtype="fp32",
                      gradient_checkpointing=False, mode="ΔR only", triangular=False, trigger_words="<c> dog",
                      save_name="", save_every=0)


def decompose(pack, model, rank=4):
    """QR-LoRA Decompose, paper preset, fast, no cache: the basis a test trains in."""
    return pack.node("QRLoRADecompose").execute(model, rank, "paper", "", "fast", False)[0]


def run_train(pack, model, basis, arch, copies=1, **overrides):
    """Train ΔR through the node as ComfyUI's executor runs it; `copies` of the one image give several noise draws a step."""
    latent, cond = latent_and_cond(arch)
    with torch.inference_mode():  # one image, several noise draws per step
        latent = {"samples": latent["samples"].repeat(copies, 1, 1, 1)}
    kwargs = dict(TRAIN_DEFAULTS, **overrides)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        return pack.node("QRLoRATrainDelta").execute(model, basis, latent, cond, **kwargs)


@contextmanager
def previews_shown():
    """Yields a list that collects (step, format, size) of every preview image sent to ComfyUI's progress hook."""
    import comfy.utils

    shown = []

    def hook(value, total, preview, node_id=None):
        if preview is not None:
            shown.append((value, preview[0], preview[1].size))

    old, comfy.utils.PROGRESS_BAR_HOOK = comfy.utils.PROGRESS_BAR_HOOK, hook
    try:
        yield shown
    finally:
        comfy.utils.PROGRESS_BAR_HOOK = old


@contextmanager
def cancel_after_step(step: int):
    """Cancel a run as ComfyUI's Cancel button does, once its `step`-th optimizer step is done.

    POST /interrupt sets ComfyUI's interrupt flag (comfy.model_management.interrupt_current_processing);
    Train ΔR checks it before each step, so the run stops with exactly `step` steps done. The flag is set from
    torch's optimizer-step hook: ComfyUI's progress hook cannot time it (from 0.33 ProgressBar sends an update
    only every 100 ms). The flag is cleared afterwards, raised or not.
    """
    import comfy.model_management
    from torch.optim.optimizer import register_optimizer_step_post_hook

    done = 0

    def after_optimizer_step(optimizer, args, kwargs):
        nonlocal done
        done += 1
        if done == step:
            comfy.model_management.interrupt_current_processing(True)

    handle = register_optimizer_step_post_hook(after_optimizer_step)
    try:
        yield
    finally:
        handle.remove()
        comfy.model_management.interrupt_current_processing(False)


def diffusion_weights(model) -> dict[str, torch.Tensor]:
    """Copies of every diffusion-model weight as it currently is."""
    return {k: v.detach().clone() for k, v in model.model.diffusion_model.state_dict().items()}


def random_delta(pack, basis, seed: int, name: str, scale: float = 0.05):
    """qr_core's random ΔR, from the pack's own qr_core (its classes are the ones the nodes check)."""
    return pack.module("qr_core.adapters.delta").random_delta(basis, seed, scale, name)


def scaled_fp8_checkpoint(arch: str = "sd3", seed: int = 0, scale: float = 2.0):
    """A model loaded by ComfyUI's own Load Diffusion Model path from an old-style scaled-fp8 checkpoint.

    Every Linear weight is stored as fp8 with a `scale_weight` (and the
    `scaled_fp8` marker key), as the fp8 releases of SD3.5 and FLUX are. ComfyUI
    0.3.x loads such files with its scaled-fp8 ops; from 0.8 it converts them
    (comfy.utils.convert_old_quants) into QuantizedTensor weights with
    `weight_scale` / `comfy_quant` keys. Returns the ModelPatcher and the
    dequantized weights the file holds (fp32). SD3, because ComfyUI reads all of
    MMDiT's sizes from a file (FLUX's hidden size and heads are fixed by its detection).
    """
    import comfy.sd

    source = tiny_model(arch, seed)
    state, dequantized = {}, {}
    with torch.inference_mode():  # as ComfyUI's executor runs Load Diffusion Model
        weights = source.model.diffusion_model.state_dict()
        for key, value in weights.items():
            layer = key[: -len(".weight")]
            if key.endswith(".weight") and value.ndim == 2 and layer + ".bias" in weights:  # a Linear
                stored = (value / scale).to(torch.float8_e4m3fn)
                state[key], state[layer + ".scale_weight"] = stored, torch.tensor(scale)
                state[layer + ".scale_input"] = torch.tensor(1.0)
                dequantized[key] = stored.float() * scale
            else:
                state[key] = value.clone()
        state["scaled_fp8"] = torch.tensor([], dtype=torch.float8_e4m3fn)
        model = comfy.sd.load_diffusion_model_state_dict(state, model_options={})
    assert model is not None, "ComfyUI did not recognise the checkpoint"
    return model, dequantized


def triangular_in_official_basis(pack, model, delta) -> bool:
    """Whether every ΔR of a triangular run is upper-triangular in the official basis Q·O of its target."""
    rotation = pack.module("qr_core.adapters.bypass").official_rotation
    get = pack.module("nodes.services.model_weights").base_weight_getter(model)
    for t in delta.targets:
        w = get(t.key).float()
        coords = rotation(delta.q[t.name], w[t.rows(w.shape[0])]).T @ delta.delta[t.name]
        if float(coords.tril(-1).abs().amax()) > 1e-4 * float(coords.abs().amax()):
            return False
    return delta.triangular and delta.triangular_basis == "official"
