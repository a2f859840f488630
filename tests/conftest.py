import pytest
import torch

from comfyui_location import report_line
from qr_core.world.mini_flux import MiniFlux
from qr_testing import TINY


def pytest_report_header(config):
    return report_line()


def pytest_terminal_summary(terminalreporter):
    # At the end too: in CI's log the version stays next to the result it belongs to.
    terminalreporter.write_line(report_line())


@pytest.fixture
def tiny_flux():
    torch.manual_seed(0)
    return MiniFlux(TINY).eval()


@pytest.fixture
def tiny_weights(tiny_flux):
    return dict(tiny_flux.state_dict())
