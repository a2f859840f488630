"""Smoke test of bench/decompose.py: --quick runs every set on tiny shapes and writes the result files."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "decompose.py"


def test_quick_run_writes_json_and_markdown(tmp_path):
    """Run as a user runs it: a script, from any folder."""
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--quiet", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (js,) = tmp_path.glob("decompose-*-quick.json")
    md = js.with_suffix(".md")
    assert md.exists()
    data = json.loads(js.read_text())
    assert data["quick"] is True and js.name == f"decompose-{data['machine']['slug']}-quick.json"
    for key in ("machine", "settings", "sets", "targets", "method"):
        assert key in data
    for key in ("cpu", "cores", "torch", "gpu", "slug"):
        assert key in data["machine"]
    assert set(data["sets"]) == {"sdxl", "sd3", "flux", "flux2", "qwen_image"}
    for name, s in data["sets"].items():
        for key in ("layers", "per_shape", "est_exact_per_layer_total_s", "est_fast_per_layer_total_s",
                    "fast_batched_total_s", "speedup_batched", "speedup_per_layer", "worst_energy_ratio",
                    "fingerprint_s", "cache_warm_s", "extrapolated"):
            assert key in s, (name, key)
        assert s["layers"] > 0 and s["fast_batched_total_s"] > 0
        assert 0.9 < s["worst_energy_ratio"] <= 1.0 + 1e-4
        assert s["cache_warm_status"] == "hit"
        for shp in s["per_shape"].values():
            assert shp["sampled"] >= 1 and shp["count"] >= shp["sampled"]
    # The quick shapes keep the real structure: the same slicing of fused weights as the real models.
    assert data["sets"]["flux"]["row_slices"] > 0 and data["sets"]["sd3"]["row_slices"] > 0
    assert data["sets"]["flux2"]["row_slices"] > 0 and data["sets"]["flux2"]["arch"] == "flux2"
    assert data["sets"]["qwen_image"]["arch"] == "qwen_image"
    assert "cpu_sdxl_fast_speedup_ge_15x" in data["targets"]
    assert "| sdxl |" in md.read_text()
