"""Command line: `python -m qr_core` or `qr-lora`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from .adapters.delta import DTYPES, QRDelta, describe_delta_header
from .bases.cache import BasisCache, get_basis
from .bases.decompose import METHODS, DecomposeSettings
from .checkpoint import CheckpointWeights
from .errors import QRLoRAError, SettingError
from .files import read_header
from .merging.merge import DEFAULT_NAMING, NAMING_HELP, NAMINGS, export_merge, merged_delta, module_ranks
from .targets import ARCHITECTURES, PRESETS, select_targets
from .training.run_settings import RunSettings, choices

# The node's preview inputs have no place on the command line (nothing shows them).
NOT_ON_THE_COMMAND_LINE = ("preview_every", "preview_steps")


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="target", file=sys.stderr)
    return bar, lambda done, _total: bar.update(done - bar.n)


def cmd_decompose(a) -> dict:
    weights = CheckpointWeights(a.checkpoint)
    targets = select_targets(weights.shapes, a.preset, a.regex, a.arch)
    settings = DecomposeSettings(rank=a.rank, method=a.method, oversample=a.oversample,
                                 power_iters=a.power_iters, max_power_iters=max(a.power_iters, a.max_power_iters),
                                 seed=a.seed)
    bar, progress = _progress_bar(len(targets), "decompose") if not a.json else (None, None)
    basis = get_basis(weights, targets, settings, BasisCache(a.cache_dir), a.device, progress)
    if bar:
        bar.close()
    return {"summary": basis.summary(), "arch": basis.arch, "targets": len(targets), "rank": basis.rank,
            "method": settings.method, "cache": basis.cache_status, "seconds": round(basis.seconds, 4),
            "file": str(basis.path), "basis_fingerprint": basis.fingerprint}


def describe_file(path: str) -> dict:
    header, meta = read_header(path)
    fmt = meta.get("qr_lora_format", "")
    info = {"file": str(path), "size_bytes": Path(path).stat().st_size, "tensors": len(header)}
    if fmt.startswith("qr-lora-delta"):
        QRDelta.load(path)  # validates every tensor: `info` is also the way to check a file
        info.update(kind="ΔR", **describe_delta_header(header, meta))
    elif fmt.startswith("qr-lora-basis"):
        t = json.loads(meta["targets"])
        info.update(kind="basis", arch=t["arch"], preset=t["preset"], targets=len(t["targets"]),
                    settings=json.loads(meta["settings"]), basis_fingerprint=meta.get("basis_fingerprint"))
    elif any(k.endswith("lora_down.weight") for k in header):
        downs = [k for k in header if k.endswith("lora_down.weight")]
        naming = ("kohya" if all(k.startswith("lora_") for k in downs)
                  else "comfyui" if all(k.startswith("diffusion_model.") for k in downs) else "other")
        # Read from the tensors, so a file whose ss_network_dim says otherwise shows it.
        ranks = module_ranks({k: header[k]["shape"] for k in downs})
        info.update(kind="LoRA", modules=len(downs), naming=naming, largest_rank=max(ranks),
                    module_ranks={str(r): n for r, n in ranks.items()},
                    metadata={k: v for k, v in meta.items() if k.startswith(("ss_", "modelspec.", "qr_lora"))})
    else:
        info.update(kind="unknown safetensors file")
    return info


def cmd_info(a) -> dict:
    return describe_file(a.file)


def cmd_merge(a) -> dict:
    weights = a.weights or [1.0] * len(a.deltas)
    deltas = [QRDelta.load(p) for p in a.deltas]
    if a.export_lora:
        path, modules = export_merge(deltas, weights, a.output, a.naming, a.dtype, a.allow_mixed_bases)
        return {"written": str(path), "kind": "LoRA", "naming": a.naming, "modules": modules}
    path = merged_delta(deltas, weights, Path(a.output).stem).save(a.output, a.dtype)
    return {"written": str(path), "kind": "ΔR", "weights": weights}


def cmd_cache(a) -> dict:
    cache = BasisCache(a.cache_dir)
    if a.action == "clear":
        return {"directory": str(cache.directory), "freed_bytes": cache.clear()}
    entries = cache.entries()
    return {"directory": str(cache.directory), "total_bytes": sum(e.size for e in entries),
            "entries": [{"file": e.path.name, "size_bytes": e.size, "arch": e.arch, "preset": e.preset,
                         "targets": e.targets, "settings": e.settings, "created": e.created} for e in entries]}


def cmd_demo(a) -> dict:
    from .world.demo import run_demo

    report = run_demo(a.out, steps=a.steps, rank=a.rank, lr=a.lr, lambdas=(a.lambda_content, a.lambda_style),
                      log=(lambda *_: None) if a.json else print)
    return {k: v for k, v in report.items() if not k.startswith("loss_curve")} if a.json else {}


def pack_dir() -> Path:
    """The pack's folder (its nodes/ beside this qr_core), or the one inside $COMFYUI_PATH/custom_nodes."""
    here = Path(__file__).resolve().parents[1]
    candidates = [here] + sorted((Path(os.environ.get("COMFYUI_PATH", ".")) / "custom_nodes").glob("*"))
    for folder in candidates:
        if (folder / "nodes" / "services" / "comfy_library.py").is_file() and (folder / "qr_core").is_dir():
            return folder
    raise SettingError("qr-lora train needs the pack's ComfyUI side (its nodes/ folder): run it from the pack's "
                       "folder (python -m qr_core train), or set COMFYUI_PATH to a ComfyUI with the pack in custom_nodes.")


def cmd_train(a) -> dict | None:
    """Load ComfyUI and the pack (nodes/services/comfy_library.py, by path: qr_core never imports ComfyUI), then
    hand the run to the pack's headless_train; it prints its own errors and exits with their status."""
    folder = pack_dir()
    spec = importlib.util.spec_from_file_location("qr_lora_comfy_library",
                                                  folder / "nodes" / "services" / "comfy_library.py")
    library = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(library)
    pack = library.start(folder, a.comfyui, a.cpu, a.models_dir)
    values = {k: v for k, v in vars(a).items() if k != "func"}
    return importlib.import_module(f"{pack.__name__}.nodes.services.headless_train").train(values)


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a ΔR from a folder of images with .txt captions, on one or several "
                                     "processes (torchrun / accelerate launch), with ComfyUI's loaders",
                       description="Train ΔR as the Train ΔR node does, headless. Several GPUs: "
                                   "torchrun --nproc_per_node N -m qr_core train … (batch size per process).")
    t.add_argument("--dataset", required=True, help="folder of images, each with a .txt caption of the same name")
    t.add_argument("--checkpoint", help="a full checkpoint (model, text encoder, VAE), as Load Checkpoint")
    t.add_argument("--diffusion-model", help="a diffusion model file, as Load Diffusion Model")
    t.add_argument("--text-encoder", action="append", help="a text encoder file, as Load CLIP (repeat for two)")
    t.add_argument("--clip-type", help="the text encoders' model type, as Load CLIP's type (default stable_diffusion)")
    t.add_argument("--vae", help="a VAE file, as Load VAE")
    t.add_argument("--guidance", type=float, help="set the conditioning's guidance, as FluxGuidance (FLUX: 1.0)")
    t.add_argument("--comfyui", help="the ComfyUI folder (default $COMFYUI_PATH, or the one the pack is in)")
    t.add_argument("--models-dir", help="ComfyUI models folder to write into: files go to its qr_lora/ "
                                        "(default: ComfyUI's own, with its extra_model_paths.yaml)")
    t.add_argument("--cpu", action="store_true", help="train on the CPU (gloo between processes)")
    t.add_argument("--resume", help="a ΔR file name in models/qr_lora to continue, as the node's resume input")
    t.add_argument("--rank", type=int, default=64, help="basis rank, as QR-LoRA Decompose")
    t.add_argument("--preset", choices=PRESETS, default="paper")
    t.add_argument("--regex", help="target-name regex for --preset custom")
    t.add_argument("--method", choices=METHODS, default="fast")
    t.add_argument("--no-cache", dest="use_cache", action="store_false", help="do not use the basis cache")
    settings = t.add_argument_group("training settings", "the Train ΔR node's inputs of the same names and defaults")
    for field in dataclasses.fields(RunSettings):
        if field.name in NOT_ON_THE_COMMAND_LINE:
            continue
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            settings.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            settings.add_argument(flag, type=type(field.default), default=field.default, choices=choices(field.name),
                                  help=f"default {field.default}")
    t.set_defaults(func=cmd_train)


def _print_human(result: dict, indent: str = "") -> None:
    for k, v in result.items():
        if isinstance(v, dict):
            print(f"{indent}{k}:")
            _print_human(v, indent + "  ")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            print(f"{indent}{k}:")
            for item in v:
                print(f"{indent}  - " + ", ".join(f"{ik}={iv}" for ik, iv in item.items()))
        else:
            print(f"{indent}{k}: {v}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qr-lora", description="QR-LoRA: decompose, inspect, merge and export ΔR adapters.")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("decompose", help="decompose a checkpoint's targets into the basis cache")
    d.add_argument("checkpoint", help="model .safetensors (a full checkpoint or a diffusion model)")
    d.add_argument("--preset", choices=PRESETS, default="paper")
    d.add_argument("--regex", help="target-name regex for --preset custom")
    d.add_argument("--arch", choices=ARCHITECTURES, help="override architecture detection (from the state-dict keys)")
    d.add_argument("--rank", type=int, default=64)
    d.add_argument("--method", choices=METHODS, default="fast")
    d.add_argument("--oversample", type=int, default=16)
    d.add_argument("--power-iters", type=int, default=2, help="fast: at least this many power iterations")
    d.add_argument("--max-power-iters", type=int, default=8,
                   help="fast: at most this many, until the captured energy grows by less than 0.1%%")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default=None, help="e.g. cuda; default cpu")
    d.add_argument("--cache-dir", help="basis cache directory (default $QR_LORA_CACHE or the user cache)")
    d.set_defaults(func=cmd_decompose)

    i = sub.add_parser("info", help="describe a ΔR, basis or exported LoRA file")
    i.add_argument("file")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("merge", help="merge ΔR files with weights λ into a ΔR or a standard LoRA")
    m.add_argument("deltas", nargs="+", help="ΔR files")
    m.add_argument("--weights", type=float, nargs="+", help="one λ per ΔR (default 1 each)")
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--export-lora", action="store_true", help="write a standard LoRA instead of a ΔR")
    m.add_argument("--naming", choices=NAMINGS, default=DEFAULT_NAMING,
                   help="LoRA key naming (--export-lora). " + NAMING_HELP.replace("%", "%%"))
    m.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    m.add_argument("--allow-mixed-bases", action="store_true",
                   help="apply ΔR from different bases term by term (LoRA export only)")
    m.set_defaults(func=cmd_merge)

    c = sub.add_parser("cache", help="list or clear the basis cache")
    c.add_argument("action", choices=["ls", "clear"])
    c.add_argument("--cache-dir")
    c.set_defaults(func=cmd_cache)

    demo = sub.add_parser("demo", help="train a content and a style ΔR on the built-in world model and merge them")
    demo.add_argument("--out", default="qr_lora_demo")
    demo.add_argument("--steps", type=int, default=150, help="training steps per ΔR")
    demo.add_argument("--rank", type=int, default=16)
    demo.add_argument("--lr", type=float, default=5e-3)
    demo.add_argument("--lambda-content", type=float, default=1.0)
    demo.add_argument("--lambda-style", type=float, default=1.0)
    demo.set_defaults(func=cmd_demo)
    _add_train(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "merge" and args.weights and len(args.weights) != len(args.deltas):
        print(f"error: {len(args.deltas)} ΔR files but {len(args.weights)} weights; give one λ per file.", file=sys.stderr)
        return 2
    try:
        result = args.func(args)
    except QRLoRAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result is None:  # a training process other than the first: the first reports
        return 0
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    elif result:
        _print_human(result)
    return 0
