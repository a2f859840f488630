"""A model-agnostic training loop for ΔR: the caller supplies the loss, this runs the optimisation."""

from __future__ import annotations

import importlib
import importlib.util
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from ..errors import NonFiniteLossError, RuntimeSupportError, SettingError
from .lr_schedules import check_schedule, lr_factor
from .state import TrainState, rng_states, set_rng_states

# Optimizer id (in settings, run files and resume states) → the name the Train ΔR node shows.
OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "prodigy": "Prodigy", "adamw8bit": "AdamW 8-bit"}
# Optimizers from a package the pack does not require: id → (module, what to install).
OPTIONAL_OPTIMIZERS = {"prodigy": ("prodigyopt", "prodigyopt"), "adamw8bit": ("bitsandbytes", "bitsandbytes")}


def optimizer_missing(optimizer: str) -> str | None:
    """Why `optimizer` cannot run here (its package is not installed), or None when it can."""
    if optimizer not in OPTIONAL_OPTIMIZERS:
        return None
    module, package = OPTIONAL_OPTIMIZERS[optimizer]
    if importlib.util.find_spec(module) is not None:
        return None
    return (f"the optimizer {OPTIMIZERS[optimizer]} needs the package {package}, which is not installed: run "
            f"`pip install {package}` in ComfyUI's Python environment and restart ComfyUI, or pick AdamW.")


def _optional_module(optimizer: str):
    module, _ = OPTIONAL_OPTIMIZERS[optimizer]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeSupportError(optimizer_missing(optimizer) or
                                  f"the optimizer {OPTIMIZERS[optimizer]} could not import {module}.") from None


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 500
    lr: float = 1e-4
    optimizer: str = "adamw"
    weight_decay: float = 1e-4  # decoupled (AdamW, Prodigy, AdamW 8-bit); the diffusers DreamBooth scripts' default
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    seed: int = 0
    lr_schedule: str = "constant"  # see schedules.LR_SCHEDULES
    warmup_steps: int = 0
    accumulation: int = 1  # loss_fn calls (micro-batches) whose gradients are averaged into one optimizer step

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise SettingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.steps < 1 or not self.lr > 0:
            raise SettingError("steps must be ≥ 1 and lr > 0")
        if self.accumulation < 1:
            raise SettingError(f"gradient accumulation must be ≥ 1 micro-batch, not {self.accumulation}")
        check_schedule(self.lr_schedule, self.warmup_steps)

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0-based)."""
        return self.lr * lr_factor(step, self.steps, self.lr_schedule, self.warmup_steps)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def make_optimizer(params: Sequence[torch.nn.Parameter], s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "prodigy":
        # Prodigy estimates the step size itself: lr scales its estimate (1.0 as its authors advise). Its
        # safeguard keeps the estimate from growing during a warm-up, as they advise with one.
        return _optional_module("prodigy").Prodigy(params, lr=s.lr, weight_decay=s.weight_decay,
                                                   safeguard_warmup=s.warmup_steps > 0)
    if s.optimizer == "adamw8bit":
        devices = {p.device.type for p in params}
        if devices - {"cuda"}:
            raise RuntimeSupportError(f"AdamW 8-bit (bitsandbytes) trains parameters on a CUDA GPU; these are on "
                                      f"{', '.join(sorted(devices))}: pick AdamW.")
        return _optional_module("adamw8bit").optim.AdamW8bit(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.lr)


def train(params: Sequence[torch.nn.Parameter], loss_fn: Callable[[int], torch.Tensor], settings: TrainSettings,
          on_step: Callable[[int, float], None] | None = None,
          check_cancel: Callable[[], None] | None = None, start_step: int = 0,
          resume: TrainState | None = None,
          on_state: Callable[[Callable[[], TrainState]], None] | None = None,
          sync: Callable[[list[torch.nn.Parameter], float], float] | None = None) -> TrainResult:
    """Minimise `loss_fn(step)` over `params` for `settings.steps` steps.

    Each optimizer step calls `loss_fn(step)` `settings.accumulation` times
    and averages the gradients (and the reported loss), at the rate
    `settings.lr_at(step)`. `on_step(step, loss)` runs after each step
    (progress, periodic saves); `check_cancel()` runs before each step and may
    raise to stop: the params then hold the last completed step. A NaN/inf
    loss or gradient restores the params evaluated at the previous step (the
    last with a finite loss) and raises NonFiniteLossError. The global RNG is
    seeded with `settings.seed` inside a forked RNG state, so runs repeat and
    the caller's RNG is untouched.

    `resume` continues a run from its saved state (params, optimizer state,
    step and RNG): the remaining steps repeat the uninterrupted run exactly.
    `on_state(capture)` runs after each completed step, before `on_step`;
    `capture()` returns that step's TrainState and stays valid until the next
    step starts (also after a cancel or a NaN stops the loop).

    `sync(params, loss)` (data parallel, see training.distributed) runs on
    every process after each step's micro-batches: it adds up the processes'
    gradients and losses and returns the summed loss. `loss_fn` may then
    return None: no image of that micro-batch fell to this process.
    """
    params = list(params)
    opt = make_optimizer(params, settings)
    result = TrainResult()
    earlier: list[float] = []
    if resume is not None:
        resume.restore(params, opt)
        start_step, earlier = resume.step, list(resume.losses)
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    k = settings.accumulation
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        if resume is not None:
            set_rng_states(resume.rng, devices)
        else:
            torch.manual_seed(settings.seed)
        last_good = [p.detach().clone() for p in params]
        for step in range(start_step, settings.steps):
            if check_cancel:
                check_cancel()
            for group in opt.param_groups:
                group["lr"] = settings.lr_at(step)
            opt.zero_grad(set_to_none=True)
            value = 0.0
            for _ in range(k):
                loss = loss_fn(step)
                if loss is None:
                    continue
                part = float(loss.detach())
                value += part / k
                if not math.isfinite(part):
                    break
                (loss / k if k > 1 else loss).backward()
            if sync is not None:
                value = sync(params, value)
            if math.isfinite(value):
                norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip if settings.grad_clip > 0 else float("inf"))
                if math.isfinite(float(norm)):
                    for keep, p in zip(last_good, params):
                        keep.copy_(p.detach())
                    opt.step()
                    result.losses.append(value)
                    if on_state:
                        on_state(_capture(step + 1, params, opt, rng_states(devices), earlier + result.losses))
                    if on_step:
                        on_step(step + 1, value)
                    continue
                what = f"gradient norm became {float(norm)}"
            else:
                what = f"loss became {value}"
            with torch.no_grad():
                for keep, p in zip(last_good, params):
                    p.copy_(keep)
            result.seconds = time.perf_counter() - t0
            kept = max(step - 1, start_step)
            raise NonFiniteLossError(
                f"training stopped at step {step + 1}: {what}. The ΔR is kept as it was after step {kept}, "
                "the last whose loss was finite. Lower the learning rate, train in fp32, or check the input "
                "latent for NaNs.", step + 1, kept)
    result.seconds = time.perf_counter() - t0
    return result


def _capture(step: int, params: list[torch.nn.Parameter], opt: torch.optim.Optimizer, rng: dict,
             losses: list[float]) -> Callable[[], TrainState]:
    """A TrainState of the step just taken, made only if asked for (it copies every parameter and moment)."""
    def capture() -> TrainState:
        state = opt.state_dict()
        copied = {"state": {i: {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                            for i, s in state["state"].items()},
                  "param_groups": [dict(g) for g in state["param_groups"]]}
        return TrainState(step, [p.detach().clone() for p in params], copied, rng, list(losses))
    return capture
