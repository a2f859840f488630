"""Train ΔR: one content or style ΔR from a latent and its prompt (paper §3.2, ΔR only by default)."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..qr_core.adapters.delta import DTYPES
from ..qr_core.training.lr_schedules import LR_SCHEDULES
from ..qr_core.training.loop import OPTIMIZERS, optimizer_missing
from .options import check_options
from .seeds import seed_input
from .services.folders import OVERWRITE_HELP
from .services.trainer import LOSS_SPACES, TIMESTEP_SAMPLING
from .services.training_run import COMPUTE_DTYPES, RunSettings, train_delta
from .sockets import CATEGORY, QRBasis, QRDeltaType

MODE_CHOICES = {"ΔR only": "delta_r", "Q and R": "qr"}  # what the widget shows → qr_core's mode id


def optimizer_help() -> str:
    """The optimizer tooltip, saying which optional optimizers this ComfyUI cannot run and why."""
    missing = [f"{OPTIMIZERS[o]}: {why}" for o in OPTIMIZERS if (why := optimizer_missing(o))]
    return ("AdamW (the paper's) or Adam; Prodigy (package prodigyopt) sets its own step size: use learning_rate "
            "1.0 with it; AdamW 8-bit (package bitsandbytes, CUDA GPUs) keeps its moments in 8 bits. Both are "
            "optional installs." + (" Not available here: " + " ".join(missing) if missing else ""))


class QRTrainDelta(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRATrainDelta",
            display_name="QR-LoRA Train ΔR",
            category=CATEGORY,
            description="Trains ΔR (the only trainable part of W' = W_comp + Q(R + ΔR)) on one image or a small "
                        "batch with the model's own objective, and saves it to models/qr_lora. FLUX: feed the "
                        "training conditioning through FluxGuidance 1.0, as the official training does "
                        "(guidance 3.5 is for generating).",
            is_output_node=True,
            not_idempotent=True,
            # Every input arrives as a list: ComfyUI's dataset nodes give one latent and one conditioning per
            # image, and the node trains once on all of them (as ComfyUI's TrainLoraNode does).
            is_input_list=True,
            inputs=[
                io.Model.Input("model", tooltip="The base model the basis was decomposed from."),
                QRBasis.Input("basis", tooltip="From QR-LoRA Decompose on this model."),
                io.Latent.Input("latent", tooltip="The training image(s), VAE-encoded (one image, or a small batch), "
                                                  "or the latents list of ComfyUI's dataset nodes (Make/Load Training "
                                                  "Dataset, Resolution Bucket): sizes may differ, steps batch by size."),
                io.Conditioning.Input("positive", tooltip="The prompt with its trigger words, e.g. 'a photo of a <c> dog'; "
                                                          "one conditioning, or one per latent image (a dataset's "
                                                          "conditioning list pairs each caption with its image)."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Optimisation steps (paper: 500)."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-6,
                               tooltip="Learning rate (paper: 1e-4). Prodigy: 1.0 (it scales Prodigy's own "
                                       "step-size estimate)."),
                io.Combo.Input("optimizer", options=list(OPTIMIZERS.values()), default="AdamW",
                               tooltip=optimizer_help()),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Latent images per step (drawn from the batch)."),
                seed_input("Seed for noise, noise levels and image order: same seed, same ΔR."),
                io.Combo.Input("timestep_sampling", options=list(TIMESTEP_SAMPLING), default="uniform",
                               tooltip="How noise levels are drawn. 'uniform' is the paper's (eq. 2) and the "
                                       "official code's: flow models (SD3, FLUX) σ ~ U(0, 1) unshifted, ε/v "
                                       "models timesteps uniform in 0…999. 'logit-normal': σ = sigmoid(N(0, 1)) "
                                       "(SD3's training choice). 'shifted schedule': uniform over ComfyUI's "
                                       "shifted sampling schedule (more high-noise steps on flow models)."),
                io.Combo.Input("loss_space", options=list(LOSS_SPACES), default="native",
                               tooltip="'native': the model's own target (noise for ε-models, velocity "
                                       "noise − x0 for flow models, v for v-models), as in the paper. "
                                       "'x0': error of the denoised image, like ComfyUI's built-in trainer."),
                io.Combo.Input("training_dtype", options=list(COMPUTE_DTYPES), default="bf16",
                               tooltip="Compute dtype of the forward pass (ΔR itself is kept in fp32)."),
                io.Boolean.Input("gradient_checkpointing", default=True,
                                 tooltip="Recompute block activations in backward: far less memory (what FLUX, "
                                         "FLUX.2 and Qwen-Image need to fit), slower steps; on by default as in "
                                         "ComfyUI's own trainer. Off: faster steps where memory allows."),
                io.Combo.Input("mode", options=list(MODE_CHOICES), default="ΔR only",
                               tooltip="'ΔR only': the disentangled mode (mergeable ΔR). 'Q and R': trains Q and "
                                       "R directly (faster convergence, paper §4.3; not mergeable with ΔR of "
                                       "other runs)."),
                io.Boolean.Input("triangular", default=False,
                                 tooltip="Keep ΔR upper-triangular as the official code does (triu_deltaR), in "
                                         "the official basis Q·O (O from qr(QᵀW)); the saved ΔR lives in Q and "
                                         "merges like any other."),
                io.String.Input("trigger_words", default="",
                                tooltip="Trigger words stored in the file's metadata, e.g. '<c> dog'."),
                io.String.Input("save_name", default="qr_delta",
                                tooltip="File name in models/qr_lora (no extension needed); empty: do not save. "
                                        "A file of that name this run did not make is kept unless overwrite is "
                                        "on (resuming a run continues in its own files)."),
                io.Int.Input("save_every", default=0, min=0, max=100000,
                             tooltip="Also save a snapshot every N steps, save_name_step000100.safetensors…; the "
                                     "final ΔR is save_name.safetensors. 0: only at the end."),
                io.Int.Input("noise_draws", default=1, min=1, max=64, optional=True,
                             tooltip="Noise samples per image and step, in one batch: with one image the only "
                                     "way to average a step over noise levels. Cost grows about linearly (4 draws: "
                                     "3.8× the step time, measured on a small SDXL on a CPU). "
                                     "1 matches the official recipe's effective batch (its gradient "
                                     "accumulation of 4 syncs at every end of a one-image dataloader)."),
                io.Combo.Input("storage_dtype", options=list(DTYPES), default="bf16", optional=True,
                               tooltip="Dtype of Q and ΔR in the saved file: bf16 or fp16 halve the file (fp16 "
                                       "keeps finer steps for values of Q's and ΔR's size); fp32 reproduces the "
                                       "in-memory ΔR (and its merge) exactly."),
                QRDeltaType.Input("resume", optional=True,
                                  tooltip="Continue training this ΔR (it must come from the same basis). The newest "
                                          "file of a run (final, snapshot or cancelled) continues exactly: optimizer "
                                          "state, step, schedule and random draws from its .state file, up to "
                                          "`steps` in total. Other ΔR files: their weights start a new run."),
                io.Combo.Input("lr_schedule", options=list(LR_SCHEDULES), default="constant", optional=True,
                               tooltip="Learning rate over the steps: constant (the paper's), cosine or linear "
                                       "decay to 0 after the warm-up."),
                io.Int.Input("warmup_steps", default=0, min=0, max=100000, optional=True,
                             tooltip="Steps over which the learning rate rises linearly to its full value."),
                io.Int.Input("gradient_accumulation", default=1, min=1, max=1024, optional=True,
                             tooltip="Micro-batches whose gradients are averaged into one optimizer step: the "
                                     "step of a k× larger batch at the memory of one."),
                io.Int.Input("keep_last", default=3, min=0, max=10000, optional=True,
                             tooltip="Snapshots kept per run (the newest); 0 keeps all."),
                io.Boolean.Input("save_training_state", default=True, optional=True,
                                 tooltip="Write save_name.state.safetensors with each save (optimizer state, step, "
                                         "random state; about 3× the fp32 ΔR size) so the run can be resumed "
                                         "exactly, also after a cancel."),
                io.Int.Input("preview_every", default=0, min=0, max=100000, optional=True,
                             tooltip="Sample the model with the ΔR so far every N steps (and after the last) and "
                                     "show it on the node, as KSampler's previews; all of them come out as the "
                                     "previews strip. Fixed seed, cfg 1, the largest training size. 0: no previews. "
                                     "They do not change the training (same losses and ΔR)."),
                io.Int.Input("preview_steps", default=8, min=1, max=200, optional=True,
                             tooltip="Sampling steps of each preview (Euler)."),
                io.Conditioning.Input("preview_positive", optional=True,
                                      tooltip="The prompt of the previews (default: the first training prompt), "
                                              "e.g. 'a photo of a <c> dog on a beach' to watch the subject transfer."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Decode previews with this VAE (full images); without it, ComfyUI's latent "
                                     "previewer (fast, small)."),
                io.Boolean.Input("overwrite", default=False, optional=True,
                                 tooltip=OVERWRITE_HELP + " An exact resume writes on in its run's own files."),
            ],
            outputs=[
                QRDeltaType.Output(display_name="QR_DELTA", tooltip="The trained ΔR (with its Q)."),
                io.Model.Output(display_name="MODEL", tooltip="The model with this ΔR applied, for a preview."),
                io.LossMap.Output(display_name="loss", tooltip="Loss per step (plot it with Plot Loss Graph)."),
                io.Image.Output(display_name="previews",
                                tooltip="The previews side by side, oldest first (one black square without previews)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, basis, latent, positive, steps, learning_rate, optimizer, batch_size, seed,
                timestep_sampling, loss_space, training_dtype, gradient_checkpointing, mode, triangular,
                trigger_words, save_name, save_every, resume=None, noise_draws=1, storage_dtype="bf16",
                lr_schedule="constant", warmup_steps=0, gradient_accumulation=1, keep_last=3,
                save_training_state=True, preview_every=0, preview_steps=8, preview_positive=None,
                vae=None, overwrite=False) -> io.NodeOutput:
        values = {k: _single(k, v) for k, v in locals().items()
                  if k not in ("cls", "latent", "positive", "preview_positive")}
        check_options(cls, values)
        preview_conds = _as_list(preview_positive, conditioning=True)[0] if preview_positive is not None else None
        run = RunSettings.pick(values, mode=MODE_CHOICES[values["mode"]])
        outcome = train_delta(values["model"], values["basis"], [item["samples"] for item in _as_list(latent)],
                              _as_list(positive, conditioning=True), run, values["resume"], preview_conds,
                              values["vae"], cls.hidden.unique_id if cls.hidden is not None else None)
        shown = {"text": (outcome.text,)}
        if outcome.strip.images:
            shown.update(ui.PreviewImage(outcome.strip.strip(), cls=cls).as_dict())
        return io.NodeOutput(outcome.delta, outcome.preview_model, {"loss": outcome.losses}, outcome.strip.strip(),
                             ui=shown)


def _single(name: str, value):
    """The one value of a widget or model input (is_input_list gives lists); several differing values are refused."""
    if not isinstance(value, list):
        return value  # an optional input's default, or a direct call
    if not value:
        raise ValueError(f"Train ΔR: {name} received an empty list.")
    first = value[0]
    if isinstance(first, (int, float, str, bool)) and any(v != first for v in value[1:]):
        raise ValueError(f"Train ΔR trains once per run, but {name} received {len(value)} different values from a "
                         f"list ({value[:4]}…): connect a single value.")
    return first


def _as_list(value, conditioning: bool = False) -> list:
    """A list input as a list of items; a single LATENT or CONDITIONING (a direct call) as a list of one."""
    if conditioning:
        # A CONDITIONING is itself a list of [tensor, options] entries: a list of them holds lists of lists.
        single = isinstance(value, list) and value and isinstance(value[0], (list, tuple)) and len(value[0]) == 2 \
            and isinstance(value[0][1], dict)
        return [value] if single else list(value)
    return list(value) if isinstance(value, list) else [value]
