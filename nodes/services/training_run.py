"""One Train ΔR run inside ComfyUI: checks, run files, progress, previews, save on NaN and on cancel.

The node declares its inputs and hands them over as one `RunSettings`; this
module runs the whole job (`train_delta`) and returns what the node shows and
outputs. The loop itself is `trainer.run_training` over `qr_core.train`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import comfy.model_management
import comfy.utils
import torch

from ...qr_core import NonFiniteLossError, QRAdapter, QRDelta, check_trainable, merge
from ...qr_core.training.dataset import pair_dataset
from ...qr_core.training.distributed import World
from ...qr_core.training.run_settings import COMPUTE_DTYPES, RunSettings  # noqa: F401  (the node's)
from . import folders, model_weights, server
from .patches import apply_terms
from .previews import PreviewStrip
from .train_files import RunFiles, find_state, run_save_path
from .trainer import Objective, Previews, run_training


def check_processes(identity: dict, processes: int, name: str) -> None:
    """Refuse to continue exactly a run trained by another number of processes (its steps had another batch)."""
    trained = identity.get("processes", 1)
    if trained != processes:
        raise ValueError(f"{name} was trained by {trained} process(es) and this run has {processes}: its global "
                         f"batch (batch_size × processes) and its random draws belong to {trained}. Resume it "
                         f"with {trained} process(es) (`torchrun --nproc_per_node {trained} -m qr_core train`, or "
                         "the node for 1) and the same batch_size.")


@dataclass
class RunOutcome:
    delta: QRDelta
    preview_model: object  # the ModelPatcher with the ΔR applied
    losses: list[float]
    strip: PreviewStrip
    text: str  # the node's summary


def train_delta(model, basis, latents: list, conds: list, run: RunSettings, resume: QRDelta | None = None,
                preview_conds=None, vae=None, node_id=None, world: World | None = None) -> RunOutcome:
    """Train one ΔR of `basis` on `model` from paired latents and conditionings, with the run's files.

    `world`: this process's place in a data-parallel run (`qr-lora train` under torchrun); only its first
    process writes files.
    """
    world = world or World()
    check_trainable(basis.arch)
    model_weights.check_fits([basis], model)
    if resume is not None and run.mode != "delta_r":
        raise ValueError("resuming is possible in 'ΔR only' mode; set mode to 'ΔR only' or disconnect resume.")
    dataset = pair_dataset(latents, conds)
    settings = run.loop_settings()
    objective = Objective(run.timestep_sampling, run.loss_space, run.batch_size, run.noise_draws)
    identity = {"basis_fingerprint": basis.fingerprint, "rank": basis.rank, "targets": len(basis.targets),
                "mode": run.mode, "triangular": run.triangular, "optimizer": settings.optimizer}
    if world.parallel:
        identity["processes"] = world.size
    state, resume_note = find_state(resume) if resume is not None else (None, "")
    # An exact resume continues its run: the same run id, so the run's own files are written on.
    run_id = (state.record.get("run_id") if state is not None else None) or uuid.uuid4().hex
    save_path, name_note = run_save_path(run.save_name, run.overwrite, run_id)
    if not world.is_writer:  # only the first process writes files
        save_path = None
    if state is not None:
        check_processes(state.identity, world.size, resume.name)
        state.check_identity(identity, f"the training state of {resume.name}")
        if state.step >= run.steps:
            raise ValueError(f"{resume.name} has already trained {state.step} steps: set steps above {state.step} "
                             "to continue its run (steps counts the whole run).")
    record = {**settings.to_json(), "batch_size": run.batch_size, "processes": world.size,
              "noise_draws": run.noise_draws,
              "timestep_sampling": run.timestep_sampling,
              "loss_space": run.loss_space, "training_dtype": run.training_dtype,
              "gradient_checkpointing": run.gradient_checkpointing, "mode": run.mode, "triangular": run.triangular,
              "decompose": basis.settings.to_json(), "preset": basis.targets.preset,
              "images": dataset.images, "image_sizes": [list(size) for size in dataset.sizes()],
              "resumed_from": resume.name if resume is not None else None,
              "resumed_exactly": state is not None if resume is not None else None}
    device = comfy.model_management.get_torch_device()
    with torch.inference_mode(False):
        adapter = QRAdapter(basis, run.mode, run.triangular, model_weights.base_weight_getter(model), resume, device)
    files = RunFiles(save_path, adapter, run.trigger_words, record, run.storage_dtype, run.keep_last,
                     run.save_training_state, identity, run_id)
    steps = run.steps
    bar = comfy.utils.ProgressBar(steps)
    losses: list[float] = list(state.losses) if state is not None else []
    latest = {}
    strip = PreviewStrip(model, vae)

    def on_preview(step: int, latent_sample) -> None:
        bar.update_absolute(step, steps, strip.add(latent_sample))
        server.show_progress_text(f"step {step}/{steps}  loss {losses[-1]:.5f}  preview {len(strip.images)} "
                                  f"({previews.seconds + strip.seconds:.1f} s in previews)", node_id)

    previews = Previews(run.preview_every, on_preview, run.preview_steps, run.seed, preview_conds)

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        bar.update_absolute(step, steps)
        server.show_progress_text(f"step {step}/{steps}  loss {loss:.5f}", node_id)
        server.send_train_progress(node_id, step, steps, loss)
        if run.save_every and step % run.save_every == 0 and step < steps:
            files.save(step, losses, latest.get("capture"), final=False)

    try:
        result = run_training(model, adapter, dataset, [], settings, objective, COMPUTE_DTYPES[run.training_dtype],
                              run.gradient_checkpointing, on_step, resume=state,
                              on_state=lambda capture: latest.update(capture=capture), previews=previews,
                              world=world)
    except NonFiniteLossError as e:
        kept = ""
        if save_path is not None and losses:
            files.delta(e.last_good_step, losses[-1]).save(save_path, run.storage_dtype)
            kept = f" The last good ΔR (step {e.last_good_step}) was saved to {save_path.name}."
        raise NonFiniteLossError(str(e) + kept, e.step, e.last_good_step) from None
    except comfy.model_management.InterruptProcessingException:
        # A cancelled run keeps what it trained as a snapshot with its training state: resume continues it.
        if latest.get("capture") is not None:
            done = len(losses)
            if not (run.save_every and done % run.save_every == 0):  # else on_step has saved this step already
                files.save(done, losses, latest["capture"], final=False)
        raise
    preview_s = previews.seconds + strip.seconds
    train_s = max(result.seconds - preview_s, 0.0)
    files.record.update(train_seconds=round(train_s, 2), preview_seconds=round(preview_s, 2),
                        previews_at=previews.taken_at)
    delta = files.delta(len(losses), losses[-1])
    if save_path is not None:
        files.save(len(losses), losses, latest.get("capture"), final=True)
    if strip.images:
        bar.update_absolute(steps, steps, strip.strip_preview())
    text = (f"{len(basis.targets)} targets, {delta.num_params():,} trainable values, {len(losses)} steps"
            f" on {dataset.images} image(s) in {len(dataset.buckets)} size(s); "
            f"loss {losses[0]:.5f} → {losses[-1]:.5f}" + (f"; saved {save_path.name}" if save_path else "")
            + f"\ntraining {train_s:.1f} s" + (f", {len(strip.images)} previews {preview_s:.1f} s"
                                               if strip.images else "")
            + (f"\nresumed {resume.name}: {resume_note}" if resume is not None else "")
            + (f"\n{name_note}" if name_note else ""))
    return RunOutcome(delta, apply_terms(model, merge([delta], [1.0])), losses, strip, text)
