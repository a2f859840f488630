"""A model-agnostic training loop for ΔR: the caller supplies the loss, this runs the optimisation."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .errors import NonFiniteLossError, SettingError

OPTIMIZERS = ("adamw", "adam")


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 500
    lr: float = 1e-4
    optimizer: str = "adamw"
    weight_decay: float = 1e-4  # AdamW only; the diffusers DreamBooth scripts' default
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise SettingError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.steps < 1 or not self.lr > 0:
            raise SettingError("steps must be ≥ 1 and lr > 0")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def make_optimizer(params: Sequence[torch.nn.Parameter], s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.lr)


def train(params: Sequence[torch.nn.Parameter], loss_fn: Callable[[int], torch.Tensor], settings: TrainSettings,
          on_step: Callable[[int, float], None] | None = None,
          check_cancel: Callable[[], None] | None = None, start_step: int = 0) -> TrainResult:
    """Minimise `loss_fn(step)` over `params` for `settings.steps` steps.

    `on_step(step, loss)` runs after each step (progress, periodic saves);
    `check_cancel()` runs before each step and may raise to stop: the params
    then hold the last completed step. A NaN/inf loss or gradient restores
    the params evaluated at the previous step (the last with a finite loss)
    and raises NonFiniteLossError. The global RNG is seeded with `settings.seed` inside a
    forked RNG state, so runs repeat and the caller's RNG is untouched.
    """
    params = list(params)
    opt = make_optimizer(params, settings)
    result = TrainResult()
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        last_good = [p.detach().clone() for p in params]
        for step in range(start_step, settings.steps):
            if check_cancel:
                check_cancel()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(step)
            value = float(loss.detach())
            if math.isfinite(value):
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip if settings.grad_clip > 0 else float("inf"))
                if math.isfinite(float(norm)):
                    for keep, p in zip(last_good, params):
                        keep.copy_(p.detach())
                    opt.step()
                    result.losses.append(value)
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
