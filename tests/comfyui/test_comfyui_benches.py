"""Smoke tests of the ComfyUI benchmarks: --quick runs them end to end on tiny models and writes their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys


from comfyui_location import skip_or_fail_without_comfyui

skip_or_fail_without_comfyui("the ComfyUI benchmarks' smoke tests")

from qr_comfyui_runtime import COMFYUI_PATH, PACK_DIR  # noqa: E402


def run_bench(script: str, out_dir, *args: str) -> None:
    env = dict(os.environ, COMFYUI_PATH=COMFYUI_PATH, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / script), "--quick", "--threads", "1",
                           "--out-dir", str(out_dir), *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_train_step_quick(tmp_path):
    run_bench("train_step.py", tmp_path)
    (js,) = tmp_path.glob("train_step-*-tiny-comfyui-*.json")
    (r,) = json.loads(js.read_text())["results"]
    # The built-in trainer's bypass mode is the strongest baseline where ComfyUI has it (0.33 on).
    try:
        import comfy.weight_adapter.bypass  # noqa: F401
        bypass = {"comfy_bypass", "comfy_train_sampler_bypass"}
    except ImportError:
        bypass = set()
    assert set(r["mechanisms"]) == {"floor", "qr_bypass", "comfy_lora_wrapper", "qr_train_sampler",
                                    "comfy_train_sampler"} | bypass
    assert all(m["step_wall"]["median"] > 0 and m["step_wall"]["n"] == 2 and m["targets"] > 0
               for m in r["mechanisms"].values())
    assert r["mechanisms"]["floor"]["trainable_params"] == 0 < r["mechanisms"]["qr_bypass"]["trainable_params"]
    ratio = r["time_ratios"]["qr_bypass / floor"]  # paired: one ratio per round
    assert ratio["n"] == 2 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert (tmp_path / js.name.replace(".json", ".md")).is_file()
    # The built-in trainer's loop step (TrainSampler through the guider) trains the same targets at the same rank
    # as the adapters alone; the bench itself stops if a loop step left its adapter unchanged.
    m = r["mechanisms"]
    assert (m["comfy_train_sampler"]["targets"], m["comfy_train_sampler"]["trainable_params"]) == \
        (m["comfy_lora_wrapper"]["targets"], m["comfy_lora_wrapper"]["trainable_params"])
    assert m["qr_train_sampler"]["trainable_params"] == m["qr_bypass"]["trainable_params"]
    assert r["time_ratios"]["qr_train_sampler / comfy_train_sampler"]["n"] == 2
    if bypass:
        assert (m["comfy_bypass"]["trainable_params"], m["comfy_train_sampler_bypass"]["trainable_params"]) == \
            (m["comfy_lora_wrapper"]["trainable_params"],) * 2
        assert r["time_ratios"]["qr_train_sampler / comfy_train_sampler_bypass"]["n"] == 2
        assert r["memory_ratios"]["qr_bypass / comfy_bypass"] is not None


def test_merge_reapply_quick(tmp_path):
    run_bench("merge_reapply.py", tmp_path)
    (js,) = tmp_path.glob("merge_reapply-*-tiny.json")
    (r,) = json.loads(js.read_text())["results"]
    for mech in ("qr_merge", "stock_lora_loaders"):
        assert len(r[mech]["changes"]) == 3 and r[mech]["median_total_s"] > 0
    assert r["total_ratio"]["n"] == 2  # one ratio per λ change, the mechanisms alternating
    # Both mechanisms apply the same mix: fp32 files, so only rounding separates them.
    assert r["max_abs_update"] > 1e-3 and r["max_abs_difference"] < 1e-5


def test_dynamic_vram_check_runs_its_steps_on_a_cpu(tmp_path):
    """The GPU check's dynamic-VRAM script, on a CPU: no dynamic model exists there, so each step compares
    the plain model with itself; what this shows is that every step runs on this ComfyUI."""
    run_bench("dynamic_vram.py", tmp_path, "--device", "cpu")
    (js,) = tmp_path.glob("dynamic_vram-*.json")
    r = json.loads(js.read_text())
    assert r["dynamic"] is False and "CPU" in r["why_not"]
    assert {"train: same losses and ΔR", "train: no frozen weight copied", "merge: same sample",
            "K-LoRA: same sample", "λ over steps: same sample"} <= set(r["checks"])
    assert all(c["ok"] for c in r["checks"].values()), r["checks"]
