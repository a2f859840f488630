import logging
import multiprocessing as mp
import sys

import pytest
import torch

from qr_core import BasisCache, DecomposeSettings, get_basis, select_targets
from qr_core.bases.basis import Basis

from qr_testing import power_law


def model(seed=0):
    return {"a.weight": power_law(96, 64, seed=seed), "b.weight": power_law(64, 64, seed=seed + 1),
            "c.weight": power_law(64, 96, seed=seed + 2)}


def targets(weights, regex="a|b|c"):
    return select_targets({k: v.shape for k, v in weights.items()}, "custom", regex)


S = DecomposeSettings(rank=8)


def test_second_run_is_a_validated_hit(tmp_path):
    w = model()
    cache = BasisCache(tmp_path)
    cold = get_basis(w.__getitem__, targets(w), S, cache)
    warm = get_basis(w.__getitem__, targets(w), S, cache)
    assert (cold.cache_status, warm.cache_status) == ("miss", "hit")
    assert warm.fingerprint == cold.fingerprint
    for n in cold.q:
        assert torch.equal(cold.q[n], warm.q[n])
    assert len(cache.entries()) == 1


@pytest.mark.parametrize("change", ["weights", "rank", "targets", "method"])
def test_changes_miss(tmp_path, change):
    w = model()
    cache = BasisCache(tmp_path)
    get_basis(w.__getitem__, targets(w), S, cache)
    w2, ts2, s2 = dict(w), targets(w), S
    if change == "weights":
        w2["b.weight"] = w["b.weight"] * 1.01
    elif change == "rank":
        s2 = DecomposeSettings(rank=4)
    elif change == "targets":
        ts2 = targets(w, "a|b")
    else:
        s2 = DecomposeSettings(rank=8, method="exact")
    assert get_basis(w2.__getitem__, ts2, s2, cache).cache_status == "miss"
    assert len(cache.entries()) == 2


def test_edit_missed_by_sampled_fingerprint_is_caught_by_the_energy_check(tmp_path, caplog):
    w = model()
    cache = BasisCache(tmp_path)
    cold = get_basis(w.__getitem__, targets(w), S, cache)
    # Rewrite the entry as if it came from other weights but under this key.
    other = model(seed=50)
    fake = get_basis(other.__getitem__, targets(other), S, None)
    fake.save(cold.path, {"cache_key": BasisCache.key(cold.weights_fingerprint, targets(w), S)})
    with caplog.at_level(logging.WARNING, logger="qr_lora"):
        again = get_basis(w.__getitem__, targets(w), S, cache)
    assert again.cache_status.startswith("recomputed") and "energy" in again.cache_status
    assert "unusable" in caplog.text
    assert get_basis(w.__getitem__, targets(w), S, cache).cache_status == "hit"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_entry_is_reported_and_recomputed(tmp_path, damage, caplog):
    w = model()
    cache = BasisCache(tmp_path)
    path = get_basis(w.__getitem__, targets(w), S, cache).path
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\x01junk" * 100, "empty": b""}[damage])
    with caplog.at_level(logging.WARNING, logger="qr_lora"):
        b = get_basis(w.__getitem__, targets(w), S, cache)
    assert b.cache_status.startswith("recomputed")
    assert "unusable" in caplog.text
    assert Basis.load(path).fingerprint == b.fingerprint


def _writer(args):
    directory, w = args
    b = get_basis(w.__getitem__, targets(w), S, BasisCache(directory))
    return b.fingerprint


def test_concurrent_writers_leave_one_whole_entry(tmp_path):
    # The weights travel to the writers: regenerating them there could differ in the last bit
    # (thread counts change float reductions), and that would be another cache key.
    w = model()
    ctx = mp.get_context("spawn")
    with ctx.Pool(3) as pool:
        prints = pool.map(_writer, [(str(tmp_path), w) for _ in range(6)], chunksize=1)
    assert len(set(prints)) == 1
    assert [e.preset for e in BasisCache(tmp_path).entries()] == ["custom"]
    assert not list(tmp_path.glob(".*.tmp"))
    assert get_basis(w.__getitem__, targets(w), S, BasisCache(tmp_path)).cache_status == "hit"


def test_location_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("QR_LORA_CACHE", str(tmp_path / "env"))
    assert BasisCache().directory == tmp_path / "env"
    assert BasisCache(tmp_path / "explicit").directory == tmp_path / "explicit"
    monkeypatch.delenv("QR_LORA_CACHE")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert BasisCache().directory == tmp_path / "xdg" / "qr-lora" / "bases"
    cache = BasisCache(tmp_path / "c")
    w = model()
    size = get_basis(w.__getitem__, targets(w), S, cache).path.stat().st_size
    assert cache.clear() == size and cache.entries() == []
