"""Where the ComfyUI for the tests is, which version it is, and what to do when there is none.

Looked for in this order: $COMFYUI_PATH, then the ComfyUI this pack is
installed in (ComfyUI/custom_nodes/<pack>). Without one, the ComfyUI tests
skip with the reason, except under CI (CI=true), where a missing ComfyUI is a
failure: a green run that tested no ComfyUI proves nothing. A run that leaves
ComfyUI out on purpose (.ci/run's bare newcomer venv) says so with
QR_LORA_COMFYUI=absent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parents[1]


def _is_comfyui(path: Path) -> bool:
    return (path / "comfy" / "model_patcher.py").is_file() and (path / "main.py").is_file()


def find_comfyui() -> tuple[Path | None, str]:
    """(ComfyUI's folder or None, how it was found or why none was)."""
    env = os.environ.get("COMFYUI_PATH", "")
    if env:
        path = Path(env).resolve()
        if _is_comfyui(path):
            return path, "COMFYUI_PATH"
        return None, f"COMFYUI_PATH={env} is not a ComfyUI checkout (no comfy/model_patcher.py and main.py)"
    host = PACK_DIR.parent.parent
    if PACK_DIR.parent.name == "custom_nodes" and _is_comfyui(host):
        return host.resolve(), "the ComfyUI this pack is installed in"
    return None, ("ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout, or install the pack "
                  "into ComfyUI/custom_nodes")


def comfyui_version(path: Path) -> str:
    """The version ComfyUI states in comfyui_version.py (or pyproject.toml for old trees)."""
    for name, pattern in (("comfyui_version.py", r'__version__\s*=\s*"([^"]+)"'),
                          ("pyproject.toml", r'^version\s*=\s*"([^"]+)"')):
        f = path / name
        if f.is_file():
            m = re.search(pattern, f.read_text(), re.M)
            if m:
                return m.group(1)
    return "unknown"


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


COMFYUI, FOUND_HOW = find_comfyui()
VERSION = comfyui_version(COMFYUI) if COMFYUI else None
LEFT_OUT = os.environ.get("QR_LORA_COMFYUI") == "absent"
REQUIRED = os.environ.get("CI", "").lower() == "true" and not LEFT_OUT


def skip_or_fail(reason: str) -> None:
    """Skip for `reason`, or fail under CI, where whatever the ComfyUI tests need must be there."""
    if REQUIRED:
        pytest.fail(f"CI=true and {reason} (set QR_LORA_COMFYUI=absent only for a run that leaves "
                    "ComfyUI out on purpose)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def skip_or_fail_without_comfyui(what: str) -> None:
    """Call at module level (or in a fixture) of a test that needs ComfyUI."""
    if COMFYUI is None:
        skip_or_fail(f"{FOUND_HOW}; {what} need it")


def report_line() -> str:
    if COMFYUI is None:
        return f"ComfyUI: none ({'left out on purpose' if LEFT_OUT else FOUND_HOW})"
    return f"ComfyUI: {VERSION} at {COMFYUI} (found through {FOUND_HOW})"
