"""`fast` keeps ≥ 0.99 of the exact top-r energy on trained weights, not only on synthetic spectra."""

import pytest
import safetensors.torch

from qr_core import DecomposeSettings, captured_energy, decompose, select_targets
from qr_core.world.model import ASSET


@pytest.fixture(scope="module")
def trained():
    weights = safetensors.torch.load_file(str(ASSET))
    return weights, select_targets({k: v.shape for k, v in weights.items()}, "paper")


@pytest.mark.parametrize("rank", [16, 32, 64])
def test_fast_captures_99_percent_of_exact_energy_on_the_shipped_trained_model(trained, rank):
    weights, targets = trained
    _, exact = decompose(weights.__getitem__, targets, DecomposeSettings(rank=rank, method="exact"))
    q, _ = decompose(weights.__getitem__, targets, DecomposeSettings(rank=rank))
    worst = min(float(captured_energy(q[t.name], weights[t.key][t.rows(weights[t.key].shape[0])].float())
                      / exact[t.name].square().sum()) for t in targets)
    # world v3: 0.9954 (rank 16) to 0.9975 (rank 64); 2 fixed iterations: 0.987 at rank 16 (v1: 0.980)
    assert worst >= 0.99, worst


def test_two_fixed_power_iterations_fall_short_there(trained):
    """The adaptive iterations are what makes the difference (a check that the test above can fail)."""
    weights, targets = trained
    _, exact = decompose(weights.__getitem__, targets, DecomposeSettings(rank=16, method="exact"))
    fixed = DecomposeSettings(rank=16, power_iters=2, max_power_iters=2)
    q, _ = decompose(weights.__getitem__, targets, fixed)
    worst = min(float(captured_energy(q[t.name], weights[t.key][t.rows(weights[t.key].shape[0])].float())
                      / exact[t.name].square().sum()) for t in targets)
    assert worst < 0.99


def test_settings_of_cached_bases_made_before_adaptive_iterations_read_as_fixed():
    old = DecomposeSettings.from_json({"rank": 8, "method": "fast", "oversample": 16, "power_iters": 2, "seed": 0})
    assert old.max_power_iters == 2 and old.energy_tol == 0.0
    assert DecomposeSettings.from_json(DecomposeSettings().to_json()) == DecomposeSettings()
