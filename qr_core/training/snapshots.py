"""Step snapshots of a training run: `name_step000100.safetensors` beside the final `name.safetensors`.

A run's snapshots share its name, so a file list sorted by `grouped` shows
each run's final file followed by its snapshots in step order; `prune` keeps
the newest K of one run and never touches another run's files (`content` and
`content_2` are different runs: the step suffix is matched exactly).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import DeltaFileError, SettingError
from ..files import read_header
from .state import STATE_SUFFIX, state_path_for

STEP_DIGITS = 6
_SNAPSHOT = re.compile(r"^(?P<run>.+)_step(?P<step>\d{%d,})\.safetensors$" % STEP_DIGITS)


def snapshot_path(final_path: str | Path, step: int) -> Path:
    """The snapshot of the run saved at `final_path` after `step` steps."""
    final_path = Path(final_path)
    if not final_path.name.endswith(".safetensors"):
        raise SettingError(f"a run's file must end in .safetensors, not {final_path.name!r}")
    return final_path.with_name(f"{final_path.name[: -len('.safetensors')]}_step{step:0{STEP_DIGITS}d}.safetensors")


def parse_snapshot(name: str) -> tuple[str, int] | None:
    """`runs/content_step000100.safetensors` → ("runs/content", 100); None for any other name."""
    m = _SNAPSHOT.match(name.replace("\\", "/"))
    return (m["run"], int(m["step"])) if m else None


def run_snapshots(final_path: str | Path) -> list[tuple[int, Path]]:
    """The snapshots of one run on disk, oldest first."""
    final_path = Path(final_path)
    run = final_path.name[: -len(".safetensors")]
    found = []
    if final_path.parent.is_dir():
        for p in final_path.parent.iterdir():
            parsed = parse_snapshot(p.name)
            if parsed and parsed[0] == run and p.is_file():
                found.append((parsed[1], p))
    return sorted(found)


def run_files(final_path: str | Path) -> list[Path]:
    """The files of the run saved at `final_path` that exist: the final ΔR, its training state, its snapshots."""
    final_path = Path(final_path)
    own = [p for p in (final_path, state_path_for(final_path)) if p.is_file()]
    return own + [path for _, path in run_snapshots(final_path)]


def run_id_of(path: str | Path) -> str | None:
    """The id of the run that wrote a ΔR or training-state file; None when it records none or cannot be read."""
    path = Path(path)
    try:
        _, meta = read_header(path)
        record = json.loads(meta.get("record" if path.name.endswith(STATE_SUFFIX) else "training") or "{}")
    except (DeltaFileError, ValueError):
        return None
    return record.get("run_id") if isinstance(record, dict) else None


def other_runs_files(final_path: str | Path, run_id: str) -> list[Path]:
    """The files under the run name `final_path` that run `run_id` did not write (a user's, another run's)."""
    return [p for p in run_files(final_path) if run_id_of(p) != run_id]


def prune(final_path: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` snapshots of the run; 0 keeps all.

    The run's one training state (beside the final file) belongs to its newest save and is never pruned.
    """
    if keep_last <= 0:
        return []
    removed = [path for _, path in run_snapshots(final_path)[:-keep_last]]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def grouped(names: list[str]) -> list[str]:
    """File names ordered so that each run's final file is followed by its snapshots, step by step.

    Training states (`*.state.safetensors`) are left out: they are not ΔR files.
    """
    def key(name: str):
        normal = name.replace("\\", "/")
        parsed = parse_snapshot(normal)
        run, step = parsed if parsed else (normal[: -len(".safetensors")] if normal.endswith(".safetensors")
                                           else normal, -1)
        return run.lower(), run, step
    return sorted((n for n in names if not n.endswith(STATE_SUFFIX)), key=key)
