"""A real ComfyUI server (main.py --cpu on loopback) with this pack, for the live tests.

ComfyUI is found by comfyui_location ($COMFYUI_PATH, or the ComfyUI the pack
sits in); without it every live test is skipped with that reason (under CI: fails). The server runs from a temporary base directory whose
custom_nodes holds only this pack (symlinked, as a user's git clone) and the
test-only node pack tests/live/qr_lora_test_nodes (tiny models, used by the
POST /prompt test and never by a shipped workflow: test_workflows checks that).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from comfyui_location import COMFYUI, skip_or_fail_without_comfyui
from workflow_check import WORKFLOW_DIR, workflow_files

PACK_DIR = Path(__file__).resolve().parents[2]
LIVE_DIR = Path(__file__).resolve().parent
DOCS_DIR = PACK_DIR / "docs"
START_TIMEOUT_S = float(os.environ.get("QR_LORA_LIVE_START_TIMEOUT", "240"))
# Another front end than the ComfyUI's own (its static folder, e.g. comfyui_frontend_package/static of a newer
# comfyui-frontend-package): ComfyUI serves it with --front-end-root. .ci/run runs the browser tests so.
FRONTEND_ROOT = os.environ.get("QR_LORA_FRONTEND_ROOT")

# The front end's first-run tours and the missing-model downloads (no network here) stay off;
# the missing-NODES warning stays on: the browser test looks for it.
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
            "Comfy.Minimap.Visible": False}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


# The dataset workflow's folder (ComfyUI/input/<folder>): three captioned images of two sizes, as a user's.
DATASET_FOLDER = "qr_lora_dataset"
DATASET = {"dog1": ((96, 96), "a photo of a <c> dog"), "dog2": ((96, 96), "a photo of a <c> dog on grass"),
           "dog3": ((128, 96), "a photo of a <c> dog in the snow")}


def _write_dataset(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, (size, caption)) in enumerate(DATASET.items()):
        Image.new("RGB", size, (40 * i, 120, 200 - 40 * i)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(caption)


class Server:
    def __init__(self, url: str, base: Path, proc: subprocess.Popen, log: Path):
        self.url, self.base, self.proc, self.log = url, base, proc, log
        self.object_info = _get(url + "/object_info", timeout=60)
        self.version = _get(url + "/system_stats")["system"]["comfyui_version"]

    def get(self, path: str, timeout: float = 10):
        return _get(self.url + path, timeout)

    def post(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture(scope="session")
def comfy_server():
    skip_or_fail_without_comfyui("the live-server tests")
    base = Path(tempfile.mkdtemp(prefix="qr-lora-live-"))
    for sub in ("custom_nodes", "models/qr_lora", "input", "output", "temp", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "qr-lora").symlink_to(PACK_DIR, target_is_directory=True)
    (base / "custom_nodes" / "qr_lora_test_nodes").symlink_to(LIVE_DIR / "qr_lora_test_nodes", target_is_directory=True)
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(SETTINGS))
    # input/ starts empty, as a new user's: the images the workflows load come from the pack itself
    # (example_inputs/, copied in when ComfyUI loads it; test_live_workflows checks the server lists them).
    _write_dataset(base / "input" / DATASET_FOLDER)
    port = _free_port()
    log = base / "server.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--disable-auto-launch", "--disable-metadata",
           "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}"]
    if FRONTEND_ROOT:
        assert Path(FRONTEND_ROOT, "index.html").is_file(), f"QR_LORA_FRONTEND_ROOT={FRONTEND_ROOT}: no index.html"
        cmd += ["--front-end-root", FRONTEND_ROOT]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=COMFYUI, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode} while starting:\n" + log.read_text()[-4000:])
            try:
                _get(url + "/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S:.0f} s:\n" + log.read_text()[-4000:])
                time.sleep(0.5)
        text = log.read_text(errors="replace")
        failed = [l for l in text.splitlines() if "IMPORT FAILED" in l and "qr" in l.lower()]
        assert not failed, f"ComfyUI could not import the pack:\n{text[-4000:]}"
        yield Server(url, base, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.environ.get("QR_LORA_KEEP_LIVE_DIR"):
            print(f"live test directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def workflow_paths() -> list[Path]:
    paths = workflow_files()
    assert paths, f"no workflow in {WORKFLOW_DIR}"
    return paths


@pytest.fixture(scope="session")
def docs_dir(tmp_path_factory) -> Path:
    """Screenshots go to docs/ (shown by the README) only when asked: QR_LORA_UPDATE_DOCS=1."""
    if os.environ.get("QR_LORA_UPDATE_DOCS") == "1":
        DOCS_DIR.mkdir(exist_ok=True)
        return DOCS_DIR
    return tmp_path_factory.mktemp("screenshots")


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the real front end in Chromium (.ci/run also runs these "
                                       "against the newest front end)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "browser_page" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
