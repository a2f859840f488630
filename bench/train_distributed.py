"""Step time and scaling of `qr-lora train` on 1 and N processes, beside the Train ΔR node's one-process path.

The same run three ways, on the files of bench/headless_assets.py (an SD3 diffusion model, CLIP-L, TAESD, a
folder of captioned images of one size, all read by ComfyUI's loaders), at `--batch-size` images per process:

* node: the Train ΔR node (`QRTrainDelta.execute`) in a process of its own with ComfyUI and the pack loaded,
  fed the dataset as the command line encodes it: what a ComfyUI user runs;
* cli×1: `python -m qr_core train`, one process (the node's code path, started from the command line);
* cli×N: `torchrun --nproc_per_node N -m qr_core train`: gloo on the CPU, NCCL on GPUs, N× the images a step.

Step time is the run's own `train_seconds / steps` from the ΔR's metadata (the training loop alone: loading,
encoding and decomposing are left out). Scaling efficiency = step time on 1 process / step time on N processes
at the same per-process batch (weak scaling; 1.0 = N× the images per second). Every configuration runs
`--rounds` times, interleaved (node, cli×1, cli×N, node, …), and the median is reported.
Results: `<out-dir>/train_distributed-<machine>-<size>.json` and `.md`.

    COMFYUI_PATH=/path/to/ComfyUI python bench/train_distributed.py                       # CPU: 1 and 2 processes (gloo)
    COMFYUI_PATH=... python bench/train_distributed.py --device cuda --procs 1            # one GPU (bench/gpu_check.sh)
    COMFYUI_PATH=... python bench/train_distributed.py --device cuda --procs 1 2 4 8 --size small --steps 30
                                                                                          # a multi-GPU machine (NCCL)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "bench"))


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACK_DIR), str(PACK_DIR / "bench"),
                                                       os.environ.get("PYTHONPATH", "")]),
                PYTHONUNBUFFERED="1")


def _settings(opts, name: str) -> list[str]:
    return ["--rank", str(opts.rank), "--steps", str(opts.steps), "--batch-size", str(opts.batch_size),
            "--training-dtype", opts.training_dtype, "--learning-rate", "1e-4", "--save-name", name]


def _seconds_per_step(models: Path, name: str) -> float:
    from qr_core.files import read_header

    meta = read_header(models / "qr_lora" / f"{name}.safetensors")[1]
    training = json.loads(meta["training"]) if "training" in meta else {}
    return training["train_seconds"] / training["steps_done"]


def run_cli(opts, files: dict, models: Path, procs: int, name: str) -> float:
    import headless_assets

    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(procs)]
    command = launcher + ["-m", "qr_core", "train"] + headless_assets.cli_args(files, models, opts.device == "cpu") \
        + _settings(opts, name)
    done = subprocess.run(command, cwd=PACK_DIR, env=_env(), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return _seconds_per_step(models, name)


def run_node(opts, files: dict, models: Path, name: str) -> float:
    command = [sys.executable, __file__, "--worker", json.dumps({k: str(v) for k, v in files.items()}),
               "--models", str(models), "--name", name] + [f"--{k.replace('_', '-')}={v}" for k, v in
                                                          (("device", opts.device), ("rank", opts.rank),
                                                           ("steps", opts.steps), ("batch_size", opts.batch_size),
                                                           ("training_dtype", opts.training_dtype))]
    done = subprocess.run(command, cwd=PACK_DIR, env=_env(), capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the node run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return _seconds_per_step(models, name)


def node_worker(opts) -> None:
    """The Train ΔR node in this process, on the files the command line reads, encoded as it encodes them."""
    import comfy_models
    import torch

    files = json.loads(opts.worker)
    models = Path(opts.models)
    pack = comfy_models.comfy_setup(opts.device, {"qr_lora": models / "qr_lora"})
    headless = importlib.import_module(f"{pack.__name__}.nodes.services.headless_train")  # not imported by the nodes
    decompose = comfy_models.pack_module(pack, "nodes.services.model_basis").decompose_model
    node = comfy_models.pack_module(pack, "nodes.train_node").QRTrainDelta
    values = {"diffusion_model": files["diffusion_model"], "text_encoder": [files["text_encoder"]],
              "clip_type": "sd3", "vae": files["vae"]}
    model, clip, vae = headless.load_models(values)
    basis = decompose(model, opts.rank, "paper", "", "fast", True)
    with torch.inference_mode():
        latents, conds = headless.encode_dataset(headless.dataset_items(files["dataset"]), clip, vae, None)
        node.execute(model, basis, [{"samples": x} for x in latents], conds, steps=opts.steps, learning_rate=1e-4,
                     optimizer="AdamW", batch_size=opts.batch_size, seed=0, timestep_sampling="uniform",
                     loss_space="native", training_dtype=opts.training_dtype, gradient_checkpointing=False,
                     mode="ΔR only", triangular=False, trigger_words="", save_name=opts.name, save_every=0)


def report(result: dict) -> str:
    s = result["settings"]
    lines = [f"# qr-lora train: 1 and N processes beside the node ({result['machine']['slug']})", "",
             f"{result['machine']['cpu']}, {result['machine']['cores']} cores, torch {result['machine']['torch']}, "
             f"ComfyUI {result['comfyui']}; {result['machine'].get('gpu') or 'no GPU'}; load average at the start "
             f"{result['load_average']}.", "",
             f"SD3 `{s['size']}` (bench/headless_assets.py), {s['images']} images of 64×64, rank {s['rank']}, "
             f"{s['steps']} steps at batch {s['batch_size']} per process, {s['training_dtype']}, "
             f"{s['rounds']} interleaved rounds (median; min–max). Step time: the run's train_seconds / steps.", "",
             "| path | processes | images / step | s / step | images / s | scaling efficiency |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['path']} | {r['processes']} | {r['images_per_step']} | {r['seconds_per_step']:.4f} "
                     f"({min(r['all']):.4f}–{max(r['all']):.4f}) | {r['images_per_second']:.2f} | "
                     f"{r['scaling_efficiency']:.2f} |" if r.get("scaling_efficiency") is not None else
                     f"| {r['path']} | {r['processes']} | {r['images_per_step']} | {r['seconds_per_step']:.4f} "
                     f"({min(r['all']):.4f}–{max(r['all']):.4f}) | {r['images_per_second']:.2f} | – |")
    lines += ["", "Scaling efficiency: s/step of cli×1 over s/step of cli×N (1.0: N× the images per second). "
              "On a CPU the processes share the cores (and here the machine with other jobs): the figure is the "
              "machinery's overhead, not a GPU's scaling. Multi-GPU (NCCL) figures: unmeasured."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts for the command line")
    ap.add_argument("--size", default="small", choices=["tiny", "small"], help="SD3 size (bench/comfy_models.py)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=1, help="images per process and step")
    ap.add_argument("--training-dtype", default=None, choices=["fp32", "bf16"], help="default fp32 on the CPU, bf16 on CUDA")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny SD3, 3 steps, 1 round: a smoke test")
    ap.add_argument("--out-dir", default=str(PACK_DIR / "bench" / "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    opts.training_dtype = opts.training_dtype or ("fp32" if opts.device == "cpu" else "bf16")
    if opts.worker:
        return node_worker(opts)
    if opts.quick:
        opts.size, opts.steps, opts.rounds, opts.images, opts.rank = "tiny", 3, 1, 4, 4
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    import headless_assets
    import torch

    from qr_core.machine import machine_info

    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    from comfy.cli_args import args

    args.cpu = opts.device == "cpu"
    version_file = Path(os.environ["COMFYUI_PATH"]) / "comfyui_version.py"
    comfyui_version = version_file.read_text().split('"')[1] if version_file.is_file() else "unknown"

    work = Path(tempfile.mkdtemp(prefix="qr-train-distributed-"))
    files = headless_assets.write_all(work / "files", images=opts.images, size=opts.size, sizes=((64, 64),))
    configs = [("node", 1)] + [("cli", n) for n in opts.procs]
    times: dict[tuple, list[float]] = {c: [] for c in configs}
    load = os.getloadavg()
    for round_ in range(opts.rounds):
        for path, n in configs:
            models = work / f"models-{path}{n}-{round_}"
            t0 = time.perf_counter()
            step = run_node(opts, files, models, "run") if path == "node" else run_cli(opts, files, models, n, "run")
            times[(path, n)].append(step)
            print(f"round {round_ + 1}: {path}×{n}: {step:.4f} s/step ({time.perf_counter() - t0:.0f} s with start-up)",
                  flush=True)
    one = statistics.median(times[("cli", 1)]) if ("cli", 1) in times else None
    rows = []
    for path, n in configs:
        median = statistics.median(times[(path, n)])
        images = opts.batch_size * n
        rows.append({"path": f"{path}×{n}" if path == "cli" else "node", "processes": n, "images_per_step": images,
                     "seconds_per_step": median, "all": times[(path, n)], "images_per_second": images / median,
                     "scaling_efficiency": (one / median if one and path == "cli" else None)})
    machine = machine_info(opts.device if opts.device == "cpu" or torch.cuda.is_available() else "cpu")
    result = {"machine": machine, "comfyui": comfyui_version, "load_average": [round(x, 2) for x in load],
              "settings": {k: v for k, v in vars(opts).items() if k not in ("worker", "models", "name", "out_dir")},
              "rows": rows}
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"train_distributed-{machine['slug']}-{opts.size}"
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(report(result))
    print(report(result))


if __name__ == "__main__":
    main()
