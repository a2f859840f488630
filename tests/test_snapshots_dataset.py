"""Snapshot names, pruning and grouping; pairing a dataset's images with their captions by size (bare)."""

import pytest
import torch

from qr_core.training.dataset import pair_dataset
from qr_core.errors import SettingError
from qr_core.training.snapshots import grouped, parse_snapshot, prune, snapshot_path


def test_snapshot_names_and_pruning_keep_other_runs(tmp_path):
    final = tmp_path / "content.safetensors"
    assert snapshot_path(final, 100).name == "content_step000100.safetensors"
    assert snapshot_path(final, 1234567).name == "content_step1234567.safetensors"
    assert parse_snapshot("sub/content_step000100.safetensors") == ("sub/content", 100)
    assert parse_snapshot("content.safetensors") is None and parse_snapshot("content_step1.safetensors") is None
    for step in (100, 200, 300, 400):
        snapshot_path(final, step).write_bytes(b"x")
    other = tmp_path / "content_2_step000100.safetensors"
    other.write_bytes(b"x")
    (tmp_path / "content.state.safetensors").write_bytes(b"x")
    removed = prune(final, 2)
    assert sorted(p.name for p in removed) == ["content_step000100.safetensors", "content_step000200.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "content.state.safetensors", "content_2_step000100.safetensors", "content_step000300.safetensors",
        "content_step000400.safetensors"]
    assert prune(final, 0) == []


def test_grouped_lists_each_run_then_its_snapshots_without_states():
    names = ["b.safetensors", "a_step000200.safetensors", "a2.safetensors", "a.state.safetensors",
             "a_step000100.safetensors", "a.safetensors", "sub/a_step000001.safetensors", "A_x.safetensors"]
    assert grouped(names) == ["a.safetensors", "a_step000100.safetensors", "a_step000200.safetensors",
                              "a2.safetensors", "A_x.safetensors", "b.safetensors", "sub/a_step000001.safetensors"]


def cond(name):
    return [name, {}]  # ComfyUI's conditioning entry: [tensor, options]; opaque to the pairing


def test_images_pair_with_their_captions_grouped_by_size():
    a, b, c = torch.full((1, 4, 8, 8), 1.0), torch.full((1, 4, 8, 8), 2.0), torch.full((1, 4, 16, 16), 3.0)
    ca, cb, cc = cond("a"), cond("b"), cond("c")
    data = pair_dataset([a, c, b], [[ca], [cc], [cb]])
    assert data.images == 3 and data.sizes() == [(4, 8, 8), (4, 16, 16)]
    for bucket in data.buckets:
        for image, index in zip(bucket.latents, bucket.conds):
            assert data.conds[index][0] == {1.0: "a", 2.0: "b", 3.0: "c"}[float(image.mean())]
    shared = pair_dataset([torch.cat([a, b]), c], [[ca]])  # one caption for all images: processed once
    assert len(shared.conds) == 1 and shared.images == 3
    per_image = pair_dataset([torch.cat([a, b])], [[ca, cb]])  # one batch, one entry per image
    assert per_image.buckets[0].conds == [0, 1]


def test_dataset_lists_that_do_not_pair_are_refused():
    a = torch.zeros(2, 4, 8, 8)
    with pytest.raises(SettingError, match="2 conditionings for 3 latents"):
        pair_dataset([a, a, a], [[cond("x")], [cond("y")]])
    with pytest.raises(SettingError, match="holds 2 images but its conditioning has 3 entries"):
        pair_dataset([a], [[cond("x"), cond("y"), cond("z")]])
    with pytest.raises(SettingError, match="3 entries for 4 images"):
        pair_dataset([a, a], [[cond("x"), cond("y"), cond("z")]])
    with pytest.raises(SettingError, match="no latent"):
        pair_dataset([], [])
