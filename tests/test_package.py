"""The Registry package as comfy-cli builds it (`comfy node pack`, what `comfy node publish` uploads).

The zip: $QR_LORA_PACKAGE_ZIP (.ci/run builds it in a clean clone with its own comfy-cli); without it, this
test builds one from the checkout's tracked files when comfy-cli is importable here, and skips otherwise
(under CI=true: fails). The package holds exactly the tracked files .comfyignore keeps (nothing dropped, as
the blueprints were while their names held "Δ"), none of the development folders, and at most 8 MB.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 8_000_000
DEVELOPMENT = ("tests/", "bench/", "docs/", ".ci/", "tools/")
# What must run from the package: the entry point, the nodes, the engine with the world demo's model,
# the front end, the workflows and their thumbnails, the blueprints and the images the workflows load.
RUNTIME = ("__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md", "nodes/__init__.py",
           "qr_core/world/assets/world_model.safetensors", "qr_core/world/assets/world_encoder.safetensors",
           "js/qr_lora.js")


def tracked_files() -> list[str]:
    # -z: names as they are; without it git quotes non-ASCII names, the trap comfy-cli fell into.
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    return sorted(n for n in out.decode().split("\0") if n)


def build_with_importable_comfy_cli(tmp: Path) -> Path:
    """`comfy node pack` in a copy of the checkout's tracked files (as edited now), staged in a fresh git
    repository: comfy-cli lists the files to pack with `git ls-files` and writes node.zip where it runs."""
    copy = tmp / "qr-lora"
    for name in tracked_files():
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    subprocess.run([sys.executable, "-m", "comfy_cli", "--skip-prompt", "--no-enable-telemetry", "node", "pack"],
                   cwd=copy, check=True, capture_output=True, text=True)
    return copy / "node.zip"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    given = os.environ.get("QR_LORA_PACKAGE_ZIP")
    if given:
        assert Path(given).is_file(), f"QR_LORA_PACKAGE_ZIP={given}: no such file (did `comfy node pack` fail?)"
        return Path(given)
    if importlib.util.find_spec("comfy_cli") is None:
        reason = ("no package to check: set QR_LORA_PACKAGE_ZIP to a zip `comfy node pack` built, or install "
                  "comfy-cli here (.ci/run does both)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return build_with_importable_comfy_cli(tmp_path_factory.mktemp("package"))


def ignored(name: str) -> bool:
    return name.startswith(DEVELOPMENT) or name in (".gitignore", ".comfyignore")


def test_the_package_holds_exactly_what_runs(package):
    with zipfile.ZipFile(package) as z:
        names = sorted(n for n in z.namelist() if not n.endswith("/"))
    expected = [n for n in tracked_files() if not ignored(n)]
    assert names == expected, (f"missing: {sorted(set(expected) - set(names))}; "
                               f"unexpected: {sorted(set(names) - set(expected))}")
    assert not [n for n in names if ignored(n)]
    blueprints = [n for n in names if n.startswith("subgraphs/") and n.endswith(".json")]
    assert len(blueprints) == 2, blueprints
    assert all(n.isascii() for n in names), [n for n in names if not n.isascii()]
    workflows = [n for n in names if n.startswith("workflows/") and n.endswith(".json")]
    assert workflows and all(n.removesuffix(".json") + ".jpg" in names for n in workflows)
    for image in ("content_dog.png", "style_reference.png", "attribute_hat.png"):
        assert f"example_inputs/{image}" in names
    assert set(RUNTIME) <= set(names), set(RUNTIME) - set(names)


def test_the_package_is_at_most_8_mb(package):
    size = package.stat().st_size
    assert size <= MAX_BYTES, f"{package.name}: {size / 1e6:.2f} MB, over {MAX_BYTES / 1e6:.0f} MB"
