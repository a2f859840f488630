"""`qr-lora train` (python -m qr_core train): ComfyUI's loaders, a captioned dataset folder, one process or two.

Every run is a real command in its own processes: two processes start under torchrun (gloo on the CPU) as
they would on two GPUs under torchrun or accelerate launch. The files are a tiny SD3 diffusion model, a
CLIP-L text encoder and a TAESD VAE (bench/headless_assets.py), read by ComfyUI's own loaders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch
from safetensors.torch import load_file

import headless_assets
from comfyui_location import COMFYUI, PACK_DIR

TRAIN = ["--rank", "4", "--learning-rate", "1e-3", "--training-dtype", "fp32", "--storage-dtype", "fp32",
         "--seed", "7"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return headless_assets.write_all(tmp_path_factory.mktemp("cli_files"))


def qr_lora_train(files, models: Path, *args, processes: int = 1, fault: str | None = None, accelerate=False):
    """Run `python -m qr_core train` (under torchrun or accelerate launch for several processes)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACK_DIR), os.environ.get("PYTHONPATH", "")]),
               COMFYUI_PATH=str(COMFYUI), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    target = ["-m", "qr_core"]
    if fault:
        env["QR_TEST_FAULT"] = fault
        target = [str(Path(__file__).with_name("cli_with_fault.py"))]
    if accelerate:
        # --multi_gpu is accelerate's torchrun launcher (with --cpu it would start one process); the
        # command's own --cpu then picks gloo, as on GPUs it picks NCCL.
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                    str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    elif processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    else:
        launcher = [sys.executable]
    command = launcher + target + ["train"] + headless_assets.cli_args(files, models) + TRAIN + [str(a) for a in args]
    return subprocess.run(command, cwd=PACK_DIR, env=env, capture_output=True, text=True, timeout=900)


def delta(models: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(models / "qr_lora" / name))


def ok(result) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


STEPS = ["--steps", "6", "--save-every", "2"]


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    """Batch 4 on 1 process and batch 2 on 2 processes (torchrun): 6 steps, a snapshot every 2 (the newest kept)."""
    models = tmp_path_factory.mktemp("runs") / "models"
    one = qr_lora_train(files, models, "--batch-size", "4", *STEPS, "--save-name", "one")
    ok(one)
    two = qr_lora_train(files, models, "--batch-size", "2", *STEPS, "--keep-last", "1", "--save-name", "two",
                        processes=2)
    ok(two)
    return models, one, two


def test_two_processes_at_batch_b_train_what_one_process_trains_at_batch_2b(files, runs):
    """3 images of one size and 1 of another: steps on the small bucket give process 1 no image. The run's files
    land in models/qr_lora as the node writes them; accelerate launch starts the same run."""
    models, one, two = runs
    a, b = delta(models, "one.safetensors"), delta(models, "two.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), (k, float((a[k] - b[k]).abs().max()))
    assert any(float(v.abs().max()) > 1e-4 for k, v in b.items() if k.startswith("delta_r."))  # it trained
    names = sorted(p.name for p in (models / "qr_lora").glob("two*"))
    assert names == ["two.safetensors", "two.state.safetensors", "two_step000004.safetensors"]
    assert "6 steps on 4 image(s) in 2 size(s)" in two.stdout and "processes: 2" in two.stdout
    assert two.stdout.count("summary:") == 1  # the first process reports, the other is silent

    pytest.importorskip("accelerate", reason="accelerate is not installed (the interop extra brings it with peft)")
    launched = qr_lora_train(files, models, "--batch-size", "2", *STEPS, "--save-name", "accelerated",
                             processes=2, accelerate=True)
    ok(launched)
    assert "processes: 2" in launched.stdout
    c = delta(models, "accelerated.safetensors")
    assert all(torch.equal(b[k], c[k]) for k in b)  # the same processes: the same run, bit for bit


def test_a_stopped_two_process_run_resumes_bit_for_bit_and_only_with_two(files, runs):
    """Ctrl-C on process 0 after step 2 stops both after step 3 with a snapshot; resumed on two processes the run
    ends exactly as the uninterrupted one; one process is refused before any model loads."""
    models = runs[0]
    common = ["--batch-size", "2", *STEPS, "--keep-last", "0", "--save-name", "run"]
    stopped = qr_lora_train(files, models, *common, processes=2, fault="0:2:SIGINT")
    assert stopped.returncode != 0
    assert "stopped: the newest snapshot is run_step000003.safetensors" in stopped.stderr
    assert sorted(p.name for p in (models / "qr_lora").glob("run*")) == [
        "run.state.safetensors", "run_step000002.safetensors", "run_step000003.safetensors"]

    alone = qr_lora_train(files, models, *common, "--resume", "run_step000003.safetensors")
    assert alone.returncode == 1
    assert "was trained by 2 process(es) and this run has 1" in alone.stderr
    assert not (models / "qr_lora" / "run.safetensors").exists()

    resumed = qr_lora_train(files, models, *common, "--resume", "run_step000003.safetensors", processes=2)
    ok(resumed)
    a, b = delta(models, "two.safetensors"), delta(models, "run.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_process_that_dies_fails_the_run_clearly_and_leaves_the_last_whole_snapshot(files, tmp_path, pack):
    models = tmp_path / "models"
    died = qr_lora_train(files, models, "--batch-size", "1", "--steps", "8", "--save-every", "1", "--keep-last", "2",
                         "--save-name", "dies", processes=2, fault="1:3:SIGKILL")
    assert died.returncode != 0
    assert "process 0 of 2 lost the others" in died.stderr
    assert "Newest snapshot: dies_step000003.safetensors" in died.stderr
    folder = models / "qr_lora"
    assert sorted(p.name for p in folder.glob("dies*")) == [
        "dies.state.safetensors", "dies_step000002.safetensors", "dies_step000003.safetensors"]
    assert not list(folder.glob(".dies*"))  # no partly written file
    snapshot = pack.module("qr_core").QRDelta.load(folder / "dies_step000003.safetensors")
    assert snapshot.training["steps_done"] == 3 and snapshot.training["processes"] == 2
    state = pack.module("qr_core.training.state").TrainState.load(folder / "dies.state.safetensors")
    assert state.step == 3 and state.identity["processes"] == 2
