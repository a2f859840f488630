"""What Train ΔR writes into models/qr_lora while it runs: step snapshots, the final ΔR, the run's training state.

A run named `content` writes `content_step000100.safetensors`… (the newest
`keep_last` kept), `content.safetensors` at the end, and
`content.state.safetensors`: the training state of the newest file saved,
which lets a later run continue it exactly (see qr_core.training.state).
Files under the name that another run (or the user) made are never touched:
the run then saves as `content_00001_…` (run_save_path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...qr_core import QRAdapter, QRDelta
from ...qr_core.errors import QRLoRAError
from ...qr_core.training.snapshots import other_runs_files, prune, snapshot_path
from ...qr_core.training.state import TrainState, state_path_for
from . import folders


def relative_name(path: Path) -> str:
    """A file's name as models/qr_lora lists it (subfolders with '/')."""
    root = Path(folders.delta_folder()).resolve()
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.name


def run_save_path(save_name: str, overwrite: bool, run_id: str) -> tuple[Path | None, str]:
    """Where run `run_id` saves its final ΔR (None: it does not save), and a note when that is not save_name.

    A name whose files (final, state, snapshots) were all written by this run is its own: an exact resume
    writes on there. Any other file under the name is kept unless `overwrite`: the run then takes the next
    numbered name, so its snapshots and pruning never touch another run's files either.
    """
    if not save_name.strip():
        return None, ""
    return folders.save_path(folders.FOLDER, save_name, overwrite,
                             in_use=lambda path: bool(other_runs_files(path, run_id)))


class RunFiles:
    """The files of one training run; `save` is called with the state of the step it saves."""

    def __init__(self, final_path: Path | None, adapter: QRAdapter, trigger_words: str, record: dict,
                 storage_dtype: str, keep_last: int, save_state: bool, identity: dict, run_id: str):
        self.final_path, self.adapter, self.trigger_words = final_path, adapter, trigger_words
        self.record, self.storage_dtype, self.keep_last = record, storage_dtype, keep_last
        self.save_state, self.identity = save_state, identity
        self.run_id = run_id
        self.state_path = state_path_for(final_path) if final_path is not None and save_state else None

    def delta(self, done: int, final_loss: float | None) -> QRDelta:
        meta = {**self.record, "steps_done": done, "final_loss": final_loss, "run_id": self.run_id}
        if self.state_path is not None:
            meta["state_file"] = relative_name(self.state_path)
        return self.adapter.to_delta(self.trigger_words, meta, name=self.final_path.stem if self.final_path else "")

    def save(self, done: int, losses: list[float], capture: Callable[[], TrainState] | None,
             final: bool) -> Path | None:
        """Save the ΔR after `done` steps (a snapshot, or the final file) and the run's training state."""
        if self.final_path is None:
            return None
        path = self.final_path if final else snapshot_path(self.final_path, done)
        self.delta(done, losses[-1] if losses else None).save(path, self.storage_dtype)
        if self.state_path is not None and capture is not None:
            state = capture()
            state.identity = dict(self.identity)
            state.record = {"run_id": self.run_id, "delta_file": relative_name(path)}
            state.save(self.state_path)
        prune(self.final_path, self.keep_last)
        return path


def find_state(resume: QRDelta) -> tuple[TrainState | None, str]:
    """The training state that continues `resume` exactly, or None and why only its weights are used."""
    name = resume.training.get("state_file")
    if not name:
        return None, "its file has no training state: ΔR weights only, a new schedule and optimizer"
    try:
        state = TrainState.load(folders.input_path(folders.FOLDER, name))
    except (FileNotFoundError, QRLoRAError) as e:
        return None, f"its training state {name} cannot be used ({e}): ΔR weights only"
    if state.record.get("run_id") != resume.training.get("run_id") or state.step != resume.training.get("steps_done"):
        return None, (f"the run's training state {name} is at step {state.step}, this ΔR at step "
                      f"{resume.training.get('steps_done')}: ΔR weights only (resume from the newest file for an "
                      "exact resume)")
    return state, f"exact resume from step {state.step} ({name})"
