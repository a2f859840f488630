"""Fixtures for the tests against the real ComfyUI runtime (no mocks).

The runtime is set up by qr_comfyui_runtime on import; the pack is loaded
through ComfyUI's own custom-node loader. Without ComfyUI every module here
is skipped (see comfy_env).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from qr_comfyui_runtime import AVAILABLE

if AVAILABLE:
    from qr_comfyui_runtime import ROOT


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def pack():
    """The pack loaded by ComfyUI's loader (init_external_custom_nodes); returns its module accessor."""
    import nodes

    asyncio.run(nodes.init_external_custom_nodes())
    name = str(ROOT / "custom_nodes" / "qr-lora").replace(".", "_x_")
    if name not in sys.modules:
        pytest.fail("ComfyUI did not import the pack (IMPORT FAILED); see the log above.")
    return PackModules(name)


class PackModules:
    """Access to the pack's modules and node classes as ComfyUI registered them."""

    def __init__(self, package: str):
        self.package = package

    def module(self, dotted: str):
        return sys.modules[f"{self.package}.{dotted}"]

    def node(self, node_id: str):
        import nodes

        return nodes.NODE_CLASS_MAPPINGS[node_id]


def pytest_sessionfinish(session, exitstatus):
    """Remove this run's temporary ComfyUI tree (the pack link inside is unlinked, not followed)."""
    if AVAILABLE:
        import shutil

        shutil.rmtree(ROOT, ignore_errors=True)
