"""Train ΔR: one content or style ΔR from a latent and its prompt (paper §3.2, ΔR only by default)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
from comfy_api.latest import io, ui

from ..qr_core import NonFiniteLossError, QRAdapter, QRDelta, TrainSettings, merge
from .services import folders, model_weights, server
from .services.patches import apply_terms
from .options import check_options
from .sockets import CATEGORY, QRBasis, QRDeltaType
from .services.trainer import LOSS_SPACES, TIMESTEP_SAMPLING, Objective, run_training

MODE_CHOICES = {"ΔR only": "delta_r", "Q and R": "qr"}  # what the widget shows → qr_core's mode id
COMPUTE_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
STORAGE_DTYPES = ("bf16", "fp32")


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
            inputs=[
                io.Model.Input("model", tooltip="The base model the basis was decomposed from."),
                QRBasis.Input("basis", tooltip="From QR-LoRA Decompose on this model."),
                io.Latent.Input("latent", tooltip="The training image(s), VAE-encoded (one image, or a small batch)."),
                io.Conditioning.Input("positive", tooltip="The prompt with its trigger words, e.g. 'a photo of a <c> dog'; "
                                                          "one conditioning, or one per latent image."),
                io.Int.Input("steps", default=500, min=1, max=100000, tooltip="Optimisation steps (paper: 500)."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-6,
                               tooltip="Learning rate (paper: 1e-4)."),
                io.Combo.Input("optimizer", options=["AdamW", "Adam"], default="AdamW", tooltip="The optimizer."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Latent images per step (drawn from the batch)."),
                io.Int.Input("noise_draws", default=1, min=1, max=64,
                             tooltip="Noise samples per image and step, in one batch: with one image the only "
                                     "way to average a step over noise levels. Cost grows about linearly (4 draws: "
                                     "3.8× the step time, measured on a small SDXL on a CPU). "
                                     "1 matches the official recipe's effective batch (its gradient "
                                     "accumulation of 4 syncs at every end of a one-image dataloader)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed for noise, noise levels and image order: same seed, same ΔR."),
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
                io.Combo.Input("storage_dtype", options=list(STORAGE_DTYPES), default="bf16",
                               tooltip="Dtype of Q and ΔR in the saved file: bf16 halves the file; fp32 "
                                       "reproduces the in-memory ΔR (and its merge) exactly."),
                io.Boolean.Input("gradient_checkpointing", default=False,
                                 tooltip="Recompute block activations in backward: less memory, slower steps."),
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
                                tooltip="File name in models/qr_lora (no extension needed); empty: do not save."),
                io.Int.Input("save_every", default=0, min=0, max=100000,
                             tooltip="Also save every N steps (same file, replaced atomically); 0: only at the end."),
                QRDeltaType.Input("resume", optional=True,
                                  tooltip="Continue training this ΔR (it must come from the same basis)."),
            ],
            outputs=[
                QRDeltaType.Output(display_name="QR_DELTA", tooltip="The trained ΔR (with its Q)."),
                io.Model.Output(display_name="MODEL", tooltip="The model with this ΔR applied, for a preview."),
                io.LossMap.Output(display_name="loss", tooltip="Loss per step (plot it with Plot Loss Graph)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, basis, latent, positive, steps, learning_rate, optimizer, batch_size, seed,
                timestep_sampling, loss_space, training_dtype, gradient_checkpointing, mode, triangular,
                trigger_words, save_name, save_every, resume=None, noise_draws=1,
                storage_dtype="bf16") -> io.NodeOutput:
        import torch

        check_options(cls, locals())
        mode_id = MODE_CHOICES[mode]
        model_weights.check_fits([basis], model)
        if resume is not None and mode_id != "delta_r":
            raise ValueError("resuming is possible in 'ΔR only' mode; set mode to 'ΔR only' or disconnect resume.")
        save_path = folders.output_path(folders.FOLDER, save_name) if save_name.strip() else None
        settings = TrainSettings(steps=steps, lr=learning_rate, optimizer=optimizer.lower(), seed=seed)
        objective = Objective(timestep_sampling, loss_space, batch_size, noise_draws)
        record = {**settings.to_json(), "batch_size": batch_size, "noise_draws": noise_draws,
                  "timestep_sampling": timestep_sampling,
                  "loss_space": loss_space, "training_dtype": training_dtype,
                  "gradient_checkpointing": gradient_checkpointing, "mode": mode_id, "triangular": triangular,
                  "decompose": basis.settings.to_json(), "preset": basis.targets.preset,
                  "resumed_from": resume.name if resume is not None else None}
        device = comfy.model_management.get_torch_device()
        with torch.inference_mode(False):
            adapter = QRAdapter(basis, mode_id, triangular, model_weights.base_weight_getter(model), resume, device)
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        bar = comfy.utils.ProgressBar(steps)
        losses: list[float] = []

        def snapshot(done: int) -> QRDelta:
            meta = {**record, "steps_done": done, "final_loss": losses[-1] if losses else None}
            return adapter.to_delta(trigger_words, meta, name=save_path.stem if save_path else "")

        def on_step(step: int, loss: float) -> None:
            losses.append(loss)
            bar.update_absolute(step, steps)
            server.show_progress_text(f"step {step}/{steps}  loss {loss:.5f}", node_id)
            server.send_train_progress(node_id, step, steps, loss)
            if save_path is not None and save_every and step % save_every == 0 and step < steps:
                snapshot(step).save(save_path, storage_dtype)

        latents = latent["samples"]
        try:
            run_training(model, adapter, latents, list(positive), settings, objective,
                         getattr(torch, COMPUTE_DTYPES[training_dtype]), gradient_checkpointing, on_step)
        except NonFiniteLossError as e:
            kept = ""
            if save_path is not None and losses:
                snapshot(e.last_good_step).save(save_path, storage_dtype)
                kept = f" The last good ΔR (step {e.last_good_step}) was saved to {save_path.name}."
            raise NonFiniteLossError(str(e) + kept, e.step, e.last_good_step) from None
        delta = snapshot(len(losses))
        if save_path is not None:
            delta.save(save_path, storage_dtype)
        preview = apply_terms(model, merge([delta], [1.0]))
        text = (f"{len(basis.targets)} targets, {delta.num_params():,} trainable values, {len(losses)} steps; "
                f"loss {losses[0]:.5f} → {losses[-1]:.5f}" + (f"; saved {save_path.name}" if save_path else ""))
        return io.NodeOutput(delta, preview, {"loss": losses}, ui=ui.PreviewText(text))
