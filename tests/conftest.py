import pytest
import torch

from qr_core.mini_flux import MiniFlux
from qr_testing import TINY


@pytest.fixture
def tiny_flux():
    torch.manual_seed(0)
    return MiniFlux(TINY).eval()


@pytest.fixture
def tiny_weights(tiny_flux):
    return dict(tiny_flux.state_dict())
