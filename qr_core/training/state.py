"""What an exact resume needs, in one safetensors file: parameters, optimizer state, step, RNG, losses.

The file lives next to the ΔR it belongs to (`name.state.safetensors`).
Tensors are safetensors entries and everything else is JSON in the metadata,
so a state file is never a pickle. Parameters are stored in fp32 as they
train (in the training basis, e.g. the official basis of a triangular ΔR),
whatever precision the ΔR file itself was saved in: resuming a bf16 ΔR file
would otherwise not continue the same run. The learning-rate schedule needs
no state of its own: it is a function of the step (see schedules.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import BasisMismatchError, DeltaFileError
from ..files import atomic_save, load_tensors

STATE_FORMAT = "qr-lora-train-state/1"
STATE_SUFFIX = ".state.safetensors"


def state_path_for(delta_path: str | Path) -> Path:
    """`runs/content.safetensors` → `runs/content.state.safetensors`."""
    delta_path = Path(delta_path)
    return delta_path.with_name(delta_path.name[: -len(".safetensors")] + STATE_SUFFIX
                                if delta_path.name.endswith(".safetensors") else delta_path.name + STATE_SUFFIX)


def rng_states(cuda_devices: list[int]) -> dict[str, torch.Tensor]:
    """The global generators a training loop draws from: the CPU one and those of the given CUDA devices."""
    states = {"cpu": torch.get_rng_state().clone()}
    for index in cuda_devices:
        states[f"cuda:{index}"] = torch.cuda.get_rng_state(index).clone()
    return states


def set_rng_states(states: dict[str, torch.Tensor], cuda_devices: list[int] | None = None) -> None:
    """Restore the generators; a run on one GPU takes the one saved GPU state whatever its index was (each
    process of a multi-GPU run resumes from the first process's file on a GPU of its own)."""
    cuda = {name: state for name, state in states.items() if name != "cpu"}
    if cuda_devices is not None and len(cuda_devices) == 1 and len(cuda) == 1:
        cuda = {f"cuda:{cuda_devices[0]}": next(iter(cuda.values()))}
    if "cpu" in states:
        torch.set_rng_state(states["cpu"])
    for name, state in cuda.items():
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(state, int(name.split(":")[1]))


@dataclass
class TrainState:
    """A training run after `step` optimizer steps.

    `identity` says which run it can continue (basis fingerprint, rank, mode,
    optimizer, …: whatever the caller records); `record` is free-form
    information (the run id and file names the nodes use).
    """

    step: int
    params: list[torch.Tensor]
    optimizer: dict  # torch.optim.Optimizer.state_dict()
    rng: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    identity: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        tensors = {f"param.{i}": p.detach().float() for i, p in enumerate(self.params)}
        scalars: dict[str, dict] = {}
        for index, values in self.optimizer.get("state", {}).items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{index}.{key}"] = value.detach()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        for name, state in self.rng.items():
            tensors[f"rng.{name}"] = state
        meta = {"qr_lora_format": STATE_FORMAT, "step": str(self.step),
                "param_groups": json.dumps(self.optimizer.get("param_groups", [])),
                "optimizer_scalars": json.dumps(scalars), "losses": json.dumps(self.losses),
                "identity": json.dumps(self.identity), "record": json.dumps(self.record)}
        return atomic_save(tensors, path, meta)

    @staticmethod
    def load(path: str | Path) -> "TrainState":
        path = Path(path)
        tensors, meta = load_tensors(path)
        if meta.get("qr_lora_format") != STATE_FORMAT:
            raise DeltaFileError(f"{path.name}: not a QR-LoRA training state (format {meta.get('qr_lora_format')!r}).")
        try:
            count = sum(1 for k in tensors if k.startswith("param."))
            params = [tensors[f"param.{i}"] for i in range(count)]
            state: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith("optimizer."):
                    _, index, name = key.split(".", 2)
                    state.setdefault(int(index), {})[name] = value
            for index, values in json.loads(meta["optimizer_scalars"]).items():
                state.setdefault(int(index), {}).update(values)
            rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
            return TrainState(int(meta["step"]), params,
                              {"state": state, "param_groups": json.loads(meta["param_groups"])}, rng,
                              json.loads(meta["losses"]), json.loads(meta["identity"]), json.loads(meta["record"]))
        except (KeyError, ValueError, TypeError) as e:
            raise DeltaFileError(f"{path.name}: training state is incomplete or damaged "
                                 f"({type(e).__name__}: {e}).") from None

    def check_identity(self, expected: dict, what: str = "the training state") -> None:
        """Refuse to continue a run that differs in what the state depends on, naming each difference."""
        diffs = [f"{k} {self.identity.get(k)!r} there, {v!r} here" for k, v in expected.items()
                 if self.identity.get(k) != v]
        if diffs:
            raise BasisMismatchError(
                f"{what} belongs to another kind of run ({'; '.join(diffs)}): set these inputs as they were to "
                "resume exactly, or disconnect resume to start a new run.")

    def restore(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
        """Load parameters and optimizer state into a fresh run (the RNG is restored by the loop)."""
        shapes = [tuple(p.shape) for p in params]
        saved = [tuple(p.shape) for p in self.params]
        if shapes != saved:
            raise BasisMismatchError(f"the training state holds {len(saved)} parameters of other shapes than this "
                                     f"run's {len(shapes)}: it belongs to another target set or rank.")
        with torch.no_grad():
            for p, saved_p in zip(params, self.params):
                p.copy_(saved_p.to(p.device, p.dtype))
        # Copies: tensors read inside inference mode (as ComfyUI runs nodes) cannot be updated in place later.
        copied = {"state": {i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                            for i, s in self.optimizer.get("state", {}).items()},
                  "param_groups": self.optimizer.get("param_groups", [])}
        try:
            optimizer.load_state_dict(copied)
        except (ValueError, KeyError) as e:
            raise BasisMismatchError(f"the training state's optimizer state does not fit this optimizer ({e}): "
                                     "resume with the optimizer it was saved with.") from None
