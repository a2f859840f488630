"""λ per block and λ over steps in qr_core: parsing, the groups of each architecture, the step rule."""

from __future__ import annotations

import pytest
import torch

from qr_core.merging.blocks import BLOCK_GROUPS, block_factors, parse_block_profile, scaled_updates
from qr_core.errors import SettingError
from qr_core.merging.lambda_schedule import PRESETS, resolve_schedule
from qr_core.targets import ARCHITECTURES, select_targets


def test_every_architecture_has_block_groups():
    assert set(BLOCK_GROUPS) == set(ARCHITECTURES)


def test_profile_syntax():
    assert parse_block_profile("input=1.0, middle=0.5;output=0.8", "sdxl") == {"input": 1.0, "middle": 0.5,
                                                                              "output": 0.8}
    assert parse_block_profile("  ", "flux") == {}
    assert parse_block_profile("double.3=-1\nsingle=2", "flux") == {"double.3": -1.0, "single": 2.0}
    with pytest.raises(SettingError, match=r"unknown block 'double'.*sdxl groups: input"):
        parse_block_profile("double=1", "sdxl")
    with pytest.raises(SettingError, match="knows the block groups of"):
        parse_block_profile("a=1", "unknown")


def flux_shapes(doubles=2, singles=3, h=16):
    shapes = {}
    for n in range(doubles):
        for s in ("img", "txt"):
            shapes[f"double_blocks.{n}.{s}_attn.qkv.weight"] = (3 * h, h)
            shapes[f"double_blocks.{n}.{s}_attn.proj.weight"] = (h, h)
    for n in range(singles):
        shapes[f"single_blocks.{n}.linear1.weight"] = (3 * h + 2 * h, h)
        shapes[f"single_blocks.{n}.linear2.weight"] = (h, 3 * h)
    return shapes


def test_block_factors_most_specific_entry_wins():
    targets = select_targets(flux_shapes(), "paper")
    factors = block_factors(targets, {"double": 0.5, "double.1": 2.0})
    for t in targets:
        want = 2.0 if t.key.startswith("double_blocks.1.") else 0.5 if t.key.startswith("double_blocks") else 1.0
        assert factors[t.name] == want, t.name
    updates = {t.name: torch.ones(2, 2) for t in targets}
    scaled = scaled_updates(updates, targets, {"single": 0.0})
    assert all(float(scaled[t.name].sum()) == (0.0 if t.key.startswith("single") else 4.0) for t in targets)
    with pytest.raises(SettingError, match="'single' group has blocks 0, 1, 2"):
        block_factors(targets, {"single.9": 1.0})


def test_schedule_points_hold_until_the_next_one():
    plan = resolve_schedule("custom", "0: 1, 0\n0.25: 0.5, 1; 0.75: 0, 2")
    # the world's flow: t = 1 - progress; a point is active from its start (t_start ≥ t) on
    assert [plan.factors_at(t) for t in (1.0, 0.8, 0.75, 0.7, 0.26, 0.25, 0.0)] == [
        (1, 0), (1, 0), (0.5, 1), (0.5, 1), (0.5, 1), (0, 2), (0, 2)]
    assert all(PRESETS[n][0][0] == 0.0 for n in PRESETS), "every preset sets λ from the first step"
    assert resolve_schedule("constant").factors_at(0.3) == (1.0, 1.0)


@pytest.mark.parametrize("text,match", [("", "empty"), ("0.1: 1, 1", "at 0"), ("0: 1, 1; 0: 1, 2", "rise strictly"),
                                        ("0: 1, x", "three numbers"), ("0: 1, 1; 1.5: 0, 0", "rise strictly")])
def test_bad_custom_schedules(text, match):
    with pytest.raises(SettingError, match=match):
        resolve_schedule("custom", text)
    with pytest.raises(SettingError, match="choose one of constant"):
        resolve_schedule("linear")
