"""Train ΔR through ComfyUI's own sampling path.

Like comfy_extras/nodes_train.py, a Guider_Basic runs a custom Sampler, so
conditioning (SDXL's pooled and size conds, FLUX's guidance), latent
processing and model loading are ComfyUI's. Unlike it, the loss is the
paper's (eq. 1 and 2): the model's native prediction target, derived from its
model_sampling, and ΔR is attached as a forward bypass instead of a weight
wrapper that rebuilds every weight per step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.utils.checkpoint

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy_extras.nodes_custom_sampler

from ...qr_core import QRAdapter, TrainResult, TrainSettings, frozen, train
from ...qr_core.training.dataset import Dataset, pair_dataset
from ...qr_core.training.distributed import World
from ...qr_core.training.run_settings import LOSS_SPACES, TIMESTEP_SAMPLING
from ...qr_core.training.state import TrainState
from ...qr_core.training.recompute import recomputed_in_backward, wrapped_forwards
from .model_weights import release_inference_tensors
from .training_runtime import differentiable_model_code, recast_inference_casts, weights_need_recompute

# Flow models (SD3, FLUX): σ is the flow time t itself, drawn unshifted as in the paper (eq. 2) and the
# official FLUX script; ComfyUI's model_sampling shifts its schedule (FLUX μ = 1.15, SD3 shift 3), which
# "shifted schedule" follows (mean σ 0.68 instead of 0.5 on FLUX). ε/v models: uniform timesteps 0…999.
# Keep sampled noise levels off the ends: σ→0 makes the native target's scale
# 1/σ explode, and percent 0 means "infinite σ" for discrete models.
_PERCENT_RANGE = (1e-3, 1.0 - 1e-3)


@dataclass(frozen=True)
class Objective:
    timestep_sampling: str = "uniform"
    loss_space: str = "native"
    batch_size: int = 1
    noise_draws: int = 1  # noise samples per image and step (one image: the only way to average over noise)

    def __post_init__(self):
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}")
        if self.loss_space not in LOSS_SPACES:
            raise ValueError(f"loss space must be one of {LOSS_SPACES}")
        if self.noise_draws < 1 or self.batch_size < 1:
            raise ValueError("batch size and noise draws must be at least 1")


def is_flow_model(model_sampling) -> bool:
    """Rectified-flow models (SD3, FLUX): x_σ = (1 − σ)·x0 + σ·noise with σ in (0, 1]."""
    return isinstance(model_sampling, comfy.model_sampling.CONST)


def sample_sigmas(model_sampling, n: int, how: str, device) -> torch.Tensor:
    """Noise levels for one step (see TIMESTEP_SAMPLING)."""
    if how == "shifted schedule" or not is_flow_model(model_sampling):
        # A "percent" of the model's own schedule: for ε/v models uniform timesteps, for flow models the shifted σ.
        if how == "logit-normal":  # noise level t = sigmoid(N(0, 1)), percent = 1 − t
            percent = 1.0 - torch.sigmoid(torch.randn(n))
        else:
            percent = torch.rand(n)
        percent = percent.clamp(*_PERCENT_RANGE)
        return torch.tensor([model_sampling.percent_to_sigma(float(p)) for p in percent], device=device)
    t = torch.sigmoid(torch.randn(n)) if how == "logit-normal" else torch.rand(n)
    return t.clamp(*_PERCENT_RANGE).to(device)


def native_error(model_sampling, sigma: torch.Tensor, denoised: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Error of the model's native output (ε, v or flow velocity noise − x0), from its x0 error.

    ComfyUI models return denoised = A(σ)·x + B(σ)·output, affine in the
    native output; so output − target = (denoised − x0) / B(σ), and B is read
    off model_sampling itself. EPS and CONST give B = −σ (ε and noise − x0),
    V_PREDICTION gives v, X0 models give their own x0 loss.
    """
    scale = model_sampling.calculate_denoised(sigma, torch.ones_like(x0), torch.zeros_like(x0))
    return (denoised - x0) / scale


def _clone_tensors(obj):
    """Deep copy of tensors inside conds: tensors made in inference mode cannot be saved for backward."""
    if isinstance(obj, torch.Tensor):
        return obj.clone() if obj.is_inference() else obj
    if isinstance(obj, dict):
        return {k: _clone_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone_tensors(v) for v in obj)
    if hasattr(obj, "cond") and isinstance(getattr(obj, "cond"), torch.Tensor) and obj.cond.is_inference():
        c = obj._copy_with(obj.cond.clone()) if hasattr(obj, "_copy_with") else obj
        return c
    return obj


# Block inputs count even when they need no gradient yet: FLUX's text stream
# enters its first block without one and gets it from the first in-place add.
def _is_state(v) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def _tensor_keys(values) -> set:
    return {(v.data_ptr(), tuple(v.shape)) for v in values if _is_state(v)}


def _clone_inputs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    def c(v):
        return v.clone() if _is_state(v) else v
    return tuple(c(a) for a in args), {k: c(v) for k, v in kwargs.items()}


def trainable_blocks(blocks: list[torch.nn.Module], checkpoint: bool):
    """Make the model's blocks safe (and optionally cheap) to differentiate.

    ComfyUI's blocks update their input in place (FLUX: `x += gate * out`
    after a LayerNorm saved x), which is fine for inference but breaks
    autograd once ΔR upstream makes x require grad. Tensors saved for
    backward that alias a block input are therefore cloned when saved (one
    hidden-state copy per block). With `checkpoint`, activations are instead
    recomputed in backward from a cloned input; the ΔR hooks run again then.
    """
    def wrap(forward):
        if checkpoint:
            def run(*args, **kwargs):
                def inner(*a, **k):
                    a, k = _clone_inputs(a, k)
                    return forward(*a, **k)
                return torch.utils.checkpoint.checkpoint(inner, *args, use_reentrant=False, **kwargs)
            return run

        def run(*args, **kwargs):
            keys = _tensor_keys(list(args) + list(kwargs.values()))
            if not keys:
                return forward(*args, **kwargs)

            def pack(t):
                return t.clone() if (t.data_ptr(), tuple(t.shape)) in keys else t
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                return forward(*args, **kwargs)
        return run
    return wrapped_forwards(blocks, wrap)


def transformer_blocks(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks (members of the model's top-level ModuleLists): the unit of checkpointing."""
    blocks = []
    for child in diffusion_model.children():
        if isinstance(child, torch.nn.ModuleList):
            blocks.extend(child)
    return blocks


@dataclass
class Previews:
    """Samples of the model being trained, with ΔR attached, every `every` steps and after the last.

    Each is `steps` Euler steps of ComfyUI's own sampler from noise of a fixed
    `seed`, at cfg 1 (the guider holds no negative), in the size of the largest
    training image; `conds` (a conditioning's entries) default to the first
    training conditioning. The global RNG is forked around each, so previews
    change no draw of the training: the same losses and ΔR with and without.
    `on_preview(step, latent)` gets the sample in the model's latent space.
    """

    every: int
    on_preview: Callable[[int, torch.Tensor], None]
    steps: int = 8
    seed: int = 0
    conds: list | None = None
    seconds: float = 0.0  # sampling time of all previews (the node adds its decoding)
    taken_at: list[int] = field(default_factory=list)

    def due(self, step: int, total: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == total)


class QRTrainSampler(comfy.samplers.Sampler):
    """A 'sampler' whose sample() trains the adapter; ComfyUI's guider has prepared conds and latents."""

    def __init__(self, adapter: QRAdapter, settings: TrainSettings, objective: Objective,
                 training_dtype: torch.dtype, gradient_checkpointing: bool, recompute_weights: bool,
                 on_step: Callable[[int, float], None], check_cancel: Callable[[], None],
                 dataset: Dataset, guider_bucket: int = 0, resume: TrainState | None = None,
                 on_state: Callable[[Callable[[], TrainState]], None] | None = None,
                 previews: Previews | None = None, world: World | None = None):
        self.adapter, self.settings, self.objective = adapter, settings, objective
        self.world = world or World()
        self.training_dtype = training_dtype
        self.gradient_checkpointing = gradient_checkpointing
        self.recompute_weights = recompute_weights
        self.on_step, self.check_cancel = on_step, check_cancel
        # The images by size; the guider prepared bucket `guider_bucket` (its latent is the one sample() gets).
        self.dataset, self.guider_bucket = dataset, guider_bucket
        self.resume, self.on_state = resume, on_state
        self.previews = previews
        self.result: TrainResult | None = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        # Only the training loop leaves inference mode: ComfyUI has loaded the model inside it, as for any
        # sampling. Loaded outside it, ComfyUI ≥ 0.8 would wrap quantized weights (inference-mode data) in
        # new tensors that no longer say so, and the model's state_dict would then fail in later nodes.
        with torch.inference_mode(False):
            self._train(model_wrap, extra_args, latent_image)
        return torch.zeros_like(latent_image)

    def _train(self, model_wrap, extra_args: dict, latent_image: torch.Tensor) -> None:
        base = model_wrap.inner_model  # the BaseModel, loaded by ComfyUI
        ms = base.model_sampling
        model_wrap.conds = _clone_tensors(model_wrap.conds)
        processed = list(model_wrap.conds["positive"])  # the dataset's conds in order, then the preview's
        trained = len(self.dataset.conds)
        positive, preview_positive = processed[:trained], processed[trained:] or processed[:1]
        model_wrap.conds["positive"] = positive
        device = latent_image.device
        buckets = self._bucket_latents(base, latent_image)
        conds = [b.conds for b in self.dataset.buckets]
        shared_cond = len(positive) == 1
        # Steps draw a bucket in proportion to its images (as ComfyUI's bucket mode); one bucket draws nothing.
        weights = torch.tensor([float(x.shape[0]) for x in buckets])
        autocast = (torch.autocast(device.type, dtype=self.training_dtype)
                    if self.training_dtype != torch.float32 else contextlib.nullcontext())

        def draw(latents: torch.Tensor, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x0 = latents[idx].float()
            return x0, torch.randn_like(x0), sample_sigmas(ms, len(idx), self.objective.timestep_sampling, device)

        def forward(x0: torch.Tensor, noise_: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            xt = ms.noise_scaling(sigma, noise_, x0, False)
            with autocast:
                denoised = model_wrap(xt, sigma, **extra_args).float()
            if self.objective.loss_space == "native":
                err = native_error(ms, sigma, denoised, x0)
            else:
                err = denoised - x0
            return err.square().mean()

        draws = self.objective.noise_draws
        world = self.world

        def loss_fn(step: int) -> torch.Tensor | None:
            # Every process draws the whole step (all processes' images) and trains its own slice: the draws
            # stay in step across processes and one process draws exactly what it always did.
            b = int(torch.multinomial(weights, 1)) if len(buckets) > 1 else 0
            latents = buckets[b]
            idx = torch.randperm(latents.shape[0])[: self.objective.batch_size * world.size].tolist()
            own = world.own(len(idx), self.objective.batch_size)
            share = len(own) / len(idx)  # 1.0 for one process: the loss is exactly the mean it always was
            if shared_cond:
                x0, noise_, sigma = draw(latents, [i for i in idx for _ in range(draws)])
                rows = slice(own.start * draws, own.stop * draws)
                return forward(x0[rows], noise_[rows], sigma[rows]) * share if own else None
            # One conditioning per image: each keeps its own cond (ComfyUI would blend a list of conds).
            drawn = [draw(latents, [i] * draws) for i in idx]
            losses = []
            for j in own:
                model_wrap.conds["positive"] = [positive[conds[b][idx[j]]]]
                losses.append(forward(*drawn[j]))
            return torch.stack(losses).mean() * share if losses else None

        release_inference_tensors(base)
        recast_inference_casts(base)
        recompute = recomputed_in_backward if self.recompute_weights else (lambda _: contextlib.nullcontext())
        with self.adapter.attached(base.diffusion_model), frozen(base), differentiable_model_code(), \
                recompute(base.diffusion_model), \
                trainable_blocks(transformer_blocks(base.diffusion_model), self.gradient_checkpointing):
            on_step = self.on_step
            if self.previews is not None and self.previews.every > 0:
                shape = (1, *buckets[self.guider_bucket].shape[1:])

                def on_step_with_previews(step: int, loss: float) -> None:
                    self.on_step(step, loss)
                    if self.previews.due(step, self.settings.steps):
                        t0 = time.perf_counter()
                        latent = self._preview(model_wrap, extra_args, preview_positive, shape, device, autocast)
                        self.previews.seconds += time.perf_counter() - t0
                        self.previews.taken_at.append(step)
                        self.previews.on_preview(step, latent)
                on_step = on_step_with_previews
            self.result = train(self.adapter.trainable(), loss_fn, self.settings, on_step, self.check_cancel,
                                resume=self.resume, on_state=self.on_state,
                                sync=self._sync if world.parallel else None)

    def _sync(self, params: list, loss: float) -> float:
        """Add up the processes' gradients and losses; a stop asked of any process stops them all after this step."""
        loss, stop = self.world.sum_step(params, loss)
        if stop:
            comfy.model_management.interrupt_current_processing(True)
        return loss

    def _preview(self, model_wrap, extra_args: dict, conds: list, shape: tuple, device, autocast) -> torch.Tensor:
        """One sample of the model as it is now (see Previews), in the model's latent space."""
        trained_conds = model_wrap.conds["positive"]
        model_wrap.conds["positive"] = conds
        cuda = [device.index or 0] if device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=cuda), autocast:
                ms = model_wrap.inner_model.model_sampling
                sigmas = comfy.samplers.calculate_sigmas(ms, "simple", self.previews.steps).to(device)
                noise = torch.randn(shape, generator=torch.Generator().manual_seed(self.previews.seed)).to(device)
                sampler = comfy.samplers.sampler_object("euler")
                out = sampler.sample(model_wrap, sigmas, dict(extra_args), None, noise,
                                     torch.zeros(shape, device=device), None, True)
        finally:
            model_wrap.conds["positive"] = trained_conds
        return out.float()

    def _bucket_latents(self, base, latent_image: torch.Tensor) -> list[torch.Tensor]:
        """Every bucket's latents in the model's space: the guider processed its own; the others as it does."""
        def own(x: torch.Tensor) -> torch.Tensor:
            return x.clone() if x.is_inference() else x
        out = []
        for i, bucket in enumerate(self.dataset.buckets):
            if i == self.guider_bucket:
                out.append(own(latent_image))
                continue
            x = bucket.latents.to(latent_image.device)
            if torch.count_nonzero(x) > 0:  # as CFGGuider.inner_sample: an empty latent is not shifted
                x = base.process_latent_in(x)
            out.append(own(x))
        return out


def run_training(model, adapter: QRAdapter, latents: torch.Tensor | Dataset, positive: list, settings: TrainSettings,
                 objective: Objective, training_dtype: torch.dtype, gradient_checkpointing: bool,
                 on_step: Callable[[int, float], None], recompute_weights: bool | None = None,
                 resume: TrainState | None = None,
                 on_state: Callable[[Callable[[], TrainState]], None] | None = None,
                 previews: Previews | None = None, world: World | None = None) -> TrainResult:
    """Train `adapter` on a clone of `model` with ComfyUI's guider; the adapter is detached afterwards.

    `latents`: one batch [B, …] with `positive` (one conditioning entry, or
    one per image), or a Dataset (images by size with their conditionings;
    `positive` is then ignored). recompute_weights: run each layer's forward
    again in backward (None: where the model needs it, see
    training_runtime.weights_need_recompute). `resume` and `on_state`: see
    qr_core.training.loop.train. `previews`: see Previews. `world`: this process's
    place in a data-parallel run (see qr_core.training.distributed); one process by default.
    """
    if isinstance(latents, torch.Tensor):
        n = latents.shape[0]
        if len(positive) not in (1, n):
            raise ValueError(f"{len(positive)} conditionings for {n} latents: give one conditioning, "
                             "or one per latent image.")
        dataset = pair_dataset([latents], [positive])
    else:
        dataset = latents
    patcher = model.clone()
    # Models whose latents carry a time axis (Qwen-Image, Wan) get it on image latents, as ComfyUI's sampling adds it.
    for bucket in dataset.buckets:
        bucket.latents = comfy.sample.fix_empty_latent_channels(patcher, bucket.latents)
    # The guider loads the model for (and processes) one latent: the largest bucket, so memory is planned for it.
    guider_bucket = max(range(len(dataset.buckets)), key=lambda i: dataset.buckets[i].latents.numel())
    if training_dtype != torch.float32:
        patcher.set_model_compute_dtype(training_dtype)
    if recompute_weights is None:
        recompute_weights = weights_need_recompute(patcher)
    sampler = QRTrainSampler(adapter, settings, objective, training_dtype, gradient_checkpointing, recompute_weights,
                             on_step, comfy.model_management.throw_exception_if_processing_interrupted,
                             dataset, guider_bucket, resume, on_state, previews, world)
    guider = comfy_extras.nodes_custom_sampler.Guider_Basic(patcher)
    preview_conds = list(previews.conds) if previews is not None and previews.conds and previews.every > 0 else []
    guider.set_conds(list(dataset.conds) + preview_conds)
    first = dataset.buckets[guider_bucket].latents
    with torch.inference_mode():  # as ComfyUI runs any sampling; QRTrainSampler leaves it for the loop alone
        # `sigmas` only has to be non-empty: noise levels are drawn per step by the sampler.
        guider.sample(torch.zeros_like(first), first, sampler, torch.ones(1), seed=settings.seed)
    return sampler.result
