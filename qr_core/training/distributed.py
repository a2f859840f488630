"""Data parallel training over torch.distributed, in the processes `torchrun` or `accelerate launch` start.

Both launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`World.from_env` reads them (one process without them). The run is defined by
its global batch, `batch_size` images per process: every process draws the
whole step (bucket, images, noise, noise levels) from the one seeded stream,
so all stay in step, and trains its own slice of it, by rank. Its loss is
weighted by its share of the step's images and `sum_step` adds gradients and
losses over the processes, so N processes at batch b train what one process
at batch N·b trains (a step's images are split by rank, never drawn twice).
ΔR's gradients are r×in per target: the one all-reduce per step carries a few MB.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Sequence

import torch
import torch.distributed as dist

from ..errors import ProcessGroupError, SettingError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class World:
    """This process's place among the run's processes; one process (rank 0 of 1) by default."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0):
        if not 0 <= rank < size:
            raise SettingError(f"process rank {rank} is outside a run of {size} processes: start the command with "
                               "torchrun or accelerate launch, which set RANK and WORLD_SIZE.")
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.stop_requested = False  # set by a signal handler: the run stops after the step all processes finish
        self.step = 0  # the optimizer steps summed so far, for error messages

    @staticmethod
    def from_env(environ=os.environ) -> "World":
        if "WORLD_SIZE" not in environ:
            return World()
        try:
            return World(int(environ.get("RANK", 0)), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)))
        except ValueError:
            raise SettingError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, not "
                               f"{[environ.get(k) for k in ENV]}") from None

    @property
    def is_writer(self) -> bool:
        """Only the first process writes files and reports."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def start(self, backend: str, timeout_minutes: float = 30.0) -> None:
        """Join the process group (env:// rendezvous, as torchrun and accelerate set it up)."""
        if self.parallel and not dist.is_initialized():
            dist.init_process_group(backend, rank=self.rank, world_size=self.size,
                                    timeout=timedelta(minutes=timeout_minutes))

    def close(self) -> None:
        if self.parallel and dist.is_initialized():
            dist.destroy_process_group()

    def own(self, count: int, per_process: int) -> range:
        """This process's slice of a step's `count` images, `per_process` each in rank order (may be empty)."""
        return range(min(self.rank * per_process, count), min((self.rank + 1) * per_process, count))

    def _collective(self, what: str, fn, *args):
        try:
            return fn(*args)
        except ProcessGroupError:
            raise
        except Exception as e:  # gloo and NCCL raise RuntimeError subclasses that vary by version
            raise ProcessGroupError(
                f"process {self.rank} of {self.size} lost the others while {what} after step {self.step} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): another process stopped or "
                "died (out of memory, killed, a failed GPU). The run has stopped; its newest snapshot is whole "
                "and resumes with the same number of processes.") from e

    def sum_step(self, params: Sequence[torch.nn.Parameter], loss: float) -> tuple[float, bool]:
        """Sum every process's gradients (in place) and loss, and whether any process was asked to stop."""
        if not self.parallel:
            return loss, self.stop_requested
        params = list(params)
        device = params[0].device
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        flat = torch.cat(grads + [torch.tensor([loss, float(self.stop_requested)], device=device)])
        self._collective("adding up the gradients", dist.all_reduce, flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n
        self.step += 1
        return float(flat[-2]), bool(flat[-1] > 0)

    def barrier(self, what: str) -> None:
        if self.parallel:
            self._collective(what, dist.barrier)

    def check_same(self, what: str, value: str) -> None:
        """Refuse a run whose processes disagree on `value` (the basis, the dataset, the settings)."""
        if not self.parallel:
            return
        values: list = [None] * self.size
        self._collective(f"comparing {what}", dist.all_gather_object, values, value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise SettingError(f"processes {differ} see another {what} than process 0 ({values[differ[0]]!r} there, "
                               f"{values[0]!r} on process 0): give every process the same files and options.")
