"""The Registry package, unpacked into custom_nodes as the Registry and the Manager install it, loads in a fresh
ComfyUI process (`main.py --quick-test-for-ci`) and puts the example images into its input folder: nothing
the nodes need at start-up was left out by .comfyignore.

The zip is $QR_LORA_PACKAGE_ZIP, which .ci/run builds with comfy-cli before the tests (tests/test_package.py
checks its file list); without it this test skips, and fails under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import comfy_env  # noqa: F401  (skips the module without ComfyUI)

from comfyui_location import skip_or_fail  # noqa: E402
from qr_comfyui_runtime import COMFYUI_PATH, PACK_DIR


def test_the_unpacked_package_loads_and_brings_its_example_images(tmp_path):
    package = os.environ.get("QR_LORA_PACKAGE_ZIP")
    if not package:
        skip_or_fail("QR_LORA_PACKAGE_ZIP is not set: .ci/run builds the package with comfy-cli and sets it")
    try:
        import requests  # noqa: F401  (ComfyUI's server imports it without listing it)
    except ImportError:
        skip_or_fail("ComfyUI's server needs `requests`; install it to run main.py")
    with zipfile.ZipFile(package) as z:
        z.extractall(tmp_path / "custom_nodes" / "qr-lora")
    assert not (tmp_path / "custom_nodes" / "qr-lora" / "tests").exists()
    proc = subprocess.run(
        [sys.executable, "main.py", "--quick-test-for-ci", "--cpu", "--base-directory", str(tmp_path)],
        cwd=COMFYUI_PATH, env=dict(os.environ, PYTHONPATH=""), capture_output=True, text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    ours = [line for line in log.splitlines() if "qr-lora" in line]
    assert ours and not any("IMPORT FAILED" in line for line in ours), log[-3000:]
    for image in sorted((PACK_DIR / "example_inputs").glob("*.png")):
        assert (tmp_path / "input" / image.name).read_bytes() == image.read_bytes(), image.name
