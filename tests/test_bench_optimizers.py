"""Smoke test of bench/optimizers.py: a small run writes its rows, an optimizer that cannot run says why."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "optimizers.py"


def test_small_run_writes_json_and_markdown(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--targets", "4", "--rank", "4", "--steps", "30",
                           "--out-dir", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (js,) = tmp_path.glob("optimizers-*.json")
    assert js.with_suffix(".md").exists()
    rows = {r["optimizer"]: r for r in json.loads(js.read_text())["results"]}
    assert rows["AdamW"]["final_loss"] < rows["AdamW"]["first_loss"]
    assert rows["AdamW"]["state_bytes"] == 2 * rows["AdamW"]["param_bytes"] + 4 * 4  # two moments, a step each
    assert "CUDA GPU" in rows["AdamW 8-bit"]["skipped"]  # the CPU run
    if importlib.util.find_spec("prodigyopt") is None:
        assert "pip install prodigyopt" in rows["Prodigy"]["skipped"]
    else:
        assert rows["Prodigy"]["final_loss"] < rows["Prodigy"]["first_loss"]
