"""Live training progress for the front end: `qr_lora.train_progress` events over ComfyUI's websocket.

The pack's js/qr_lora.js draws the loss curve and step/ETA on the Train ΔR
node from these events. Without a running server (tests, scripts) every call
is a no-op.
"""

from __future__ import annotations

import math
import sys
import time

EVENT = "qr_lora.train_progress"
MIN_INTERVAL_S = 0.1  # at most ~10 events a second; the first and the last step are always sent

_runs: dict[str, dict] = {}


def _server():
    """ComfyUI's running PromptServer, or None (scripts and tests that load the pack without main.py)."""
    prompt_server = getattr(sys.modules.get("server"), "PromptServer", None)
    return getattr(prompt_server, "instance", None)


def send_train_progress(node_id, step: int, total: int, loss: float) -> None:
    """Report one finished training step of the Train ΔR node `node_id` (steps count from 1)."""
    if node_id is None:
        return
    server = _server()
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
