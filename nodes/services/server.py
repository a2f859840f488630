"""ComfyUI's running server, as the pack talks to it: progress text, live training events, one HTTP route.

Found once, here (`prompt_server`). Without a running server (tests and
scripts that load the pack without main.py) every call is a no-op.

- Progress text under a running node (ComfyUI's own progress-text message).
- `qr_lora.train_progress` websocket events: js/qr_lora.js draws the loss
  curve and step/ETA on the Train ΔR node from them.
- GET /qr_lora/delta_info?file=<name>: a ΔR file's metadata for the Load ΔR
  picker, read from the safetensors header alone (no tensors).
"""

from __future__ import annotations

import math
import sys
import time

from ...qr_core.adapters.delta import describe_delta_header
from ...qr_core.files import read_header
from . import folders

EVENT = "qr_lora.train_progress"
MIN_INTERVAL_S = 0.1  # at most ~10 events a second; the first and the last step are always sent
ROUTE = "/qr_lora/delta_info"

_runs: dict[str, dict] = {}
_registered = False


def prompt_server():
    """ComfyUI's running PromptServer, or None (main.py loads server.py before custom nodes)."""
    prompt_server_class = getattr(sys.modules.get("server"), "PromptServer", None)
    return getattr(prompt_server_class, "instance", None)


def show_progress_text(text: str, node_id: str | None) -> None:
    """A line of text on the running node (the front end shows it under the progress bar)."""
    server = prompt_server()
    if node_id is not None and server is not None:
        server.send_progress_text(text, node_id)


def send_train_progress(node_id, step: int, total: int, loss: float) -> None:
    """Report one finished training step of the Train ΔR node `node_id` (steps count from 1)."""
    if node_id is None:
        return
    server = prompt_server()
    if server is None:
        return
    now = time.monotonic()
    key = str(node_id)
    run = _runs.get(key)
    if run is None or step <= 1 or step < run["step"]:
        run = _runs[key] = {"t0": now, "step0": step, "step": step, "sent": 0.0, "pending": []}
    run["step"] = step
    run["pending"].append(float(loss) if math.isfinite(loss) else None)
    done = step >= total
    if not done and step > 1 and now - run["sent"] < MIN_INTERVAL_S:
        return
    run["sent"] = now
    eta = None
    if step > run["step0"]:
        eta = (now - run["t0"]) / (step - run["step0"]) * (total - step)
    payload = {"node": key, "step": int(step), "total": int(total),
               "loss": float(loss) if math.isfinite(loss) else None,
               "eta_s": round(eta, 1) if eta is not None else None,
               "losses": run["pending"]}  # every step's loss since the previous event
    run["pending"] = []
    if done:
        _runs.pop(key, None)
    try:
        server.send_sync(EVENT, payload, getattr(server, "client_id", None))
    except Exception:  # a UI event must never stop training
        pass


def delta_info(file_name: str) -> dict:
    """Metadata of a ΔR file in models/qr_lora, as shown under the Load ΔR picker."""
    path = folders.input_path(folders.FOLDER, file_name)
    header, meta = read_header(path)  # header only; also refuses truncated files
    info = describe_delta_header(header, meta)
    info.update(file=file_name, format=meta.get("qr_lora_format"), size_mb=round(path.stat().st_size / 2**20, 2))
    return info


def register_routes() -> None:
    """GET /qr_lora/delta_info, registered once, only where ComfyUI's server runs."""
    global _registered
    server = prompt_server()
    if _registered or server is None:
        return

    from aiohttp import web

    @server.routes.get(ROUTE)
    async def _delta_info(request):
        name = request.query.get("file", "")
        try:
            return web.json_response(delta_info(name))
        except (FileNotFoundError, ValueError) as e:
            return web.json_response({"file": name, "error": str(e)})  # 200: the picker may name a file not (yet) there
        except Exception as e:  # a damaged file: say so instead of a 500 page
            return web.json_response({"file": name, "error": f"{type(e).__name__}: {e}"})

    _registered = True
