"""`qr-lora train`: Train ΔR without ComfyUI's server, in one process or several (torchrun, accelerate launch).

The same job as the node (`training_run.train_delta`, with the same
`RunSettings`, run files and exact resume), fed from a folder of images with
`.txt` captions instead of a graph: the model, text encoder and VAE load
through ComfyUI's own loaders, every caption is encoded once up front, every
image is VAE-encoded at its own size (the node's size buckets). Several
processes train one run data-parallel (qr_core.training.distributed); only
the first writes files and reports. A stop (Ctrl-C, SIGTERM) takes effect
after the step every process finishes, and saves a snapshot that resumes exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
import node_helpers

from ...qr_core.errors import ProcessGroupError, QRLoRAError
from ...qr_core.training.distributed import World
from ...qr_core.training.run_settings import RunSettings
from ...qr_core.training.snapshots import run_snapshots
from .model_basis import decompose_model
from . import folders
from .delta_files import load_delta
from .train_files import find_state, relative_name
from .training_run import check_processes, train_delta

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
STOPPED = 130  # the exit status of a run stopped by a signal (as a shell reports Ctrl-C)
SAME_REQUEST_S = 3.0


def dataset_items(folder: str) -> list[tuple[Path, str]]:
    """(image, caption) pairs of a folder: every image beside a .txt file of the same name."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"the dataset folder {folder} does not exist: give a folder of images with .txt captions.")
    images = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise ValueError(f"{folder} holds no image ({', '.join(IMAGE_EXTENSIONS)}): put the training images there, "
                         "each with a caption in a .txt file of the same name.")
    missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no caption file, e.g. {missing[:3]}: add "
                         f"{Path(missing[0]).stem}.txt with the prompt (trigger words included).")
    return [(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip()) for p in images]


def load_models(values: dict):
    """(model, clip, vae) through ComfyUI's loaders: a checkpoint, or a diffusion model, text encoders and a VAE."""
    model = clip = vae = None
    if values.get("checkpoint"):
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(
            values["checkpoint"], output_vae=True, output_clip=True,
            embedding_directory=folder_paths.get_folder_paths("embeddings"))[:3]
    if values.get("diffusion_model"):
        model = comfy.sd.load_diffusion_model(values["diffusion_model"])
    if values.get("text_encoder"):
        name = values.get("clip_type") or "stable_diffusion"
        clip_type = getattr(comfy.sd.CLIPType, name.upper(), None)
        if clip_type is None:
            raise ValueError(f"--clip-type {name} is not one of this ComfyUI's: "
                             f"{', '.join(t.name.lower() for t in comfy.sd.CLIPType)}.")
        clip = comfy.sd.load_clip(ckpt_paths=list(values["text_encoder"]),
                                  embedding_directory=folder_paths.get_folder_paths("embeddings"), clip_type=clip_type)
    if values.get("vae"):
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(values["vae"]))
        if hasattr(vae, "throw_exception_if_invalid"):
            vae.throw_exception_if_invalid()
    for what, value, fix in (("model", model, "--checkpoint or --diffusion-model"),
                             ("text encoder", clip, "--text-encoder (and --clip-type)"), ("VAE", vae, "--vae")):
        if value is None:
            raise ValueError(f"no {what} was loaded: give {fix}.")
    return model, clip, vae


def encode_dataset(items: list[tuple[Path, str]], clip, vae, guidance: float | None) -> tuple[list, list]:
    """One latent [1, C, h, w] per image and its conditioning; a caption used twice is encoded once."""
    encoded: dict[str, list] = {}
    latents, conds = [], []
    for path, caption in items:
        with Image.open(path) as image:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.float32) / 255.0
        latents.append(vae.encode(torch.from_numpy(rgb)[None]).cpu())
        if caption not in encoded:
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(caption))
            if guidance is not None:
                cond = node_helpers.conditioning_set_values(cond, {"guidance": guidance})
            encoded[caption] = cond
        conds.append(encoded[caption])
    return latents, conds


class _Progress:
    """ComfyUI's progress bars (decompose, training) as one line on stderr."""

    def __call__(self, value, total, preview=None, node_id=None, *args, **kwargs):
        if sys.stderr.isatty():
            print(f"\r{value}/{total}", end="\n" if value >= total else "", file=sys.stderr, flush=True)
        elif value >= total:  # a log file: the end of each bar only
            print(f"{value}/{total}", file=sys.stderr, flush=True)


def _stop_on_signals(world: World) -> None:
    """The first Ctrl-C or SIGTERM asks for a stop after the current step; another one later stops at once.

    A signal within a few seconds of the first is the same request: on Ctrl-C the terminal signals every
    process of the group, and torchrun (or accelerate) then forwards the signal to its workers again.
    """
    first: list[float] = []

    def ask(signum, frame):
        if first and time.monotonic() - first[0] > SAME_REQUEST_S:
            raise KeyboardInterrupt
        if first:
            return
        first.append(time.monotonic())
        world.stop_requested = True
        if not world.parallel:  # alone, the stop needs no agreement: ComfyUI's own cancel flag
            comfy.model_management.interrupt_current_processing(True)
        if world.is_writer:
            print("\nstopping after this step (again to stop at once)", file=sys.stderr, flush=True)
    signal.signal(signal.SIGINT, ask)
    signal.signal(signal.SIGTERM, ask)


def _newest_snapshot(save_name: str) -> str:
    try:
        snapshots = run_snapshots(folders.output_path(folders.FOLDER, save_name))
    except ValueError:
        return "none"
    return relative_name(snapshots[-1][1]) if snapshots else "none"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(values: dict) -> dict | None:
    """Run one training from the command line's values; the result on the first process, None on the others."""
    world = World.from_env()
    backend = "nccl" if not values.get("cpu") and torch.cuda.is_available() else "gloo"
    world.start(backend)
    where = f"process {world.rank} of {world.size}: " if world.parallel else ""
    run = RunSettings.pick(values, preview_every=0)
    try:
        result = _train(values, world, run)
    except comfy.model_management.InterruptProcessingException:
        if world.is_writer:
            name = _newest_snapshot(run.save_name)
            print(f"stopped: the newest snapshot is {name} (with its training state); continue the run with "
                  f"--resume {name} and the same options and number of processes.", file=sys.stderr)
        raise SystemExit(STOPPED)
    except ProcessGroupError as e:
        print(f"error: {where}{e} Newest snapshot: {_newest_snapshot(run.save_name)}.", file=sys.stderr)
        raise SystemExit(1)
    except (QRLoRAError, ValueError, FileNotFoundError) as e:
        print(f"error: {where}{e}", file=sys.stderr)
        raise SystemExit(1)
    world.close()  # only after a whole run: a group that lost a member may hang in its teardown
    return result


def _train(values: dict, world: World, run: RunSettings) -> dict | None:
    items = dataset_items(values["dataset"])
    resume = None
    if values.get("resume"):
        resume = load_delta(values["resume"])
        state, _ = find_state(resume)
        if state is not None:  # before the models load: a refusal should not cost minutes
            check_processes(state.identity, world.size, resume.name)
    _stop_on_signals(world)
    if world.is_writer:
        comfy.utils.set_progress_bar_global_hook(_Progress())
    world.check_same("settings and dataset", _digest([dataclasses.asdict(run), [(p.name, c) for p, c in items],
                                                      values.get("resume")]))
    model, clip, vae = load_models(values)

    def decompose():
        return decompose_model(model, values["rank"], values["preset"], values.get("regex") or "", values["method"],
                               values["use_cache"])

    # The first process fills the basis cache, the others read its file: every process trains the same basis.
    if world.is_writer:
        basis = decompose()
    world.barrier("waiting for the basis")
    if not world.is_writer:
        basis = decompose()
    world.check_same("basis", basis.fingerprint)
    with torch.inference_mode():  # as ComfyUI runs nodes: VAE Encode and CLIP Text Encode, then Train ΔR
        latents, conds = encode_dataset(items, clip, vae, values.get("guidance"))
        outcome = train_delta(model, basis, latents, conds, run, resume, world=world)
    if not world.is_writer:
        return None
    training = outcome.delta.training
    saved = folders.output_path(folders.FOLDER, run.save_name) if run.save_name.strip() else None
    return {"summary": outcome.text, "file": str(saved) if saved else None, "steps": len(outcome.losses),
            "processes": world.size, "global_batch": run.batch_size * world.size,
            "loss_first": outcome.losses[0], "loss_last": outcome.losses[-1],
            "train_seconds": training.get("train_seconds"),
            "seconds_per_step": round(training.get("train_seconds", 0.0) / max(len(outcome.losses), 1), 4)}
