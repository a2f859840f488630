"""Numbered save names (qr_core.files.free_name) and the ownership of a training run's files."""

from __future__ import annotations

import json

import torch

from qr_core.files import atomic_save, free_name
from qr_core.training.snapshots import other_runs_files, run_files


def test_a_free_name_is_kept_and_a_taken_one_numbered_above_the_highest(tmp_path):
    assert free_name(tmp_path / "style.safetensors") == tmp_path / "style.safetensors"
    (tmp_path / "style.safetensors").write_bytes(b"x")
    assert free_name(tmp_path / "style.safetensors").name == "style_00001_.safetensors"
    (tmp_path / "style_00007_.safetensors").write_bytes(b"x")  # numbers keep rising past a gap
    (tmp_path / "style_00009__step000100.safetensors").write_bytes(b"x")  # a numbered run's snapshot counts
    (tmp_path / "style_2.safetensors").write_bytes(b"x")  # another name
    assert free_name(tmp_path / "style.safetensors").name == "style_00010_.safetensors"
    assert free_name(tmp_path / "a.b.safetensors").name == "a.b.safetensors"


def _file(path, meta_key: str, run_id: str | None):
    record = {"run_id": run_id} if run_id else {}
    atomic_save({"x": torch.zeros(1)}, path, {meta_key: json.dumps(record)})


def test_a_run_owns_the_files_that_carry_its_run_id(tmp_path):
    final = tmp_path / "content.safetensors"
    _file(final, "training", "run-a")
    _file(tmp_path / "content.state.safetensors", "record", "run-a")
    _file(tmp_path / "content_step000002.safetensors", "training", "run-a")
    assert len(run_files(final)) == 3
    assert other_runs_files(final, "run-a") == []
    assert len(other_runs_files(final, "run-b")) == 3
    (tmp_path / "content_step000004.safetensors").write_bytes(b"not safetensors")  # unreadable: not ours
    assert [p.name for p in other_runs_files(final, "run-a")] == ["content_step000004.safetensors"]
