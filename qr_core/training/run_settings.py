"""Every setting of one Train ΔR run: one object for the node and for `qr-lora train`.

The node builds it from its inputs, the command line from its options (one
option per field, same names and defaults), so both train the same run from
the same settings and record them the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..adapters.delta import DTYPES
from .loop import OPTIMIZERS, TrainSettings
from .lr_schedules import LR_SCHEDULES

TIMESTEP_SAMPLING = ("uniform", "logit-normal", "shifted schedule")
LOSS_SPACES = ("native", "x0")
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}  # training_dtype → the forward's dtype
MODES = ("delta_r", "qr")  # qr_core's mode ids: "ΔR only" and "Q and R" on the node


@dataclass(frozen=True)
class RunSettings:
    """Every setting of one Train ΔR run, as the node's inputs give them (`mode` as qr_core's mode id)."""

    steps: int = 500
    learning_rate: float = 1e-4
    optimizer: str = "AdamW"
    batch_size: int = 1  # images per step; with several processes, per process
    seed: int = 0
    timestep_sampling: str = "uniform"
    loss_space: str = "native"
    training_dtype: str = "bf16"
    gradient_checkpointing: bool = True
    mode: str = "delta_r"
    triangular: bool = False
    trigger_words: str = ""
    save_name: str = "qr_delta"
    save_every: int = 0
    noise_draws: int = 1
    storage_dtype: str = "bf16"
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    gradient_accumulation: int = 1
    keep_last: int = 3
    save_training_state: bool = True
    preview_every: int = 0
    preview_steps: int = 8
    overwrite: bool = False  # replace a file under save_name that this run did not write

    @classmethod
    def pick(cls, values: dict, **changes) -> "RunSettings":
        """The settings among `values` (a node's inputs, with others beside them), with `changes` applied."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in names}, **changes})

    def loop_settings(self) -> TrainSettings:
        optimizer = {shown: id_ for id_, shown in OPTIMIZERS.items()}.get(self.optimizer, self.optimizer)
        return TrainSettings(steps=self.steps, lr=self.learning_rate, optimizer=optimizer,
                             seed=self.seed, lr_schedule=self.lr_schedule, warmup_steps=self.warmup_steps,
                             accumulation=self.gradient_accumulation)


def choices(name: str) -> list[str] | None:
    """The values a text setting takes (the node's combo options; the command line's choices), else None."""
    options = {"optimizer": OPTIMIZERS.values(), "timestep_sampling": TIMESTEP_SAMPLING, "loss_space": LOSS_SPACES,
               "training_dtype": COMPUTE_DTYPES, "storage_dtype": DTYPES, "lr_schedule": LR_SCHEDULES, "mode": MODES}
    return list(options[name]) if name in options else None
