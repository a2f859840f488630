"""QR-LoRA λ Grid: one labelled image grid over λc × λs (paper Fig. 7/17); the sampling is services/lambda_grid.py."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io, ui

from ..qr_core.merging import decorrelate as decorrelation
from ..qr_core.merging.lambda_schedule import SCHEDULE_CHOICES
from .services.lambda_grid import AUTO_CFG_HELP, ROW_TITLES, sample_grid
from .services.schedule_hooks import hooks_on_dynamic_vram
from .decorrelation_inputs import decorrelate_input, decorrelated
from .lambda_inputs import block_inputs, with_block_profiles
from .options import check_options
from .seeds import seed_input
from .sockets import CATEGORY, QRDeltaType

ROW_AXES = tuple(ROW_TITLES)


class QRLambdaGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRALambdaGrid",
            display_name="QR-LoRA λ Grid",
            category=CATEGORY,
            description="Samples the same prompt and seed for every (λc, λs) pair and returns one labelled grid: "
                        "rows λc (content), columns λs (style), as in the paper's Fig. 7.",
            inputs=[
                io.Model.Input("model", tooltip="The base model the ΔR were trained on."),
                QRDeltaType.Input("content", tooltip="The content ΔR."),
                QRDeltaType.Input("style", tooltip="The style ΔR."),
                io.Conditioning.Input("positive", tooltip="The prompt, e.g. 'a <c> dog in <s> style'."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (ignored by FLUX at cfg 1)."),
                io.Latent.Input("latent_image", tooltip="One empty latent: the size of every cell."),
                io.Vae.Input("vae", tooltip="Decodes each cell."),
                io.String.Input("lambda_content_values", default="0.5, 0.75, 1.0",
                                tooltip="λc of the rows: numbers separated by commas, or start:stop:step."),
                io.String.Input("lambda_style_values", default="0.5, 0.75, 1.0",
                                tooltip="λs of the columns: numbers separated by commas, or start:stop:step."),
                seed_input("One seed for every cell, so only λ changes across the grid."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps per cell."),
                io.Float.Input("cfg", default=0.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance. " + AUTO_CFG_HELP + " FLUX: give the "
                                       "guidance with a FluxGuidance node."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="The sampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="The noise schedule."),
                io.Combo.Input("row_axis", options=list(ROW_AXES), default="lambda_content", optional=True,
                               tooltip="What the rows sweep: λc (lambda_content_values), or λ over steps (schedule "
                                       "presets / custom lists) or a content or style block profile, given in "
                                       "row_values; then lambda_content_values holds the one λc of every row."),
                io.String.Input("row_values", default="", optional=True, multiline=True,
                                tooltip="Rows when row_axis is not lambda_content, separated by '|': schedules ("
                                        + ", ".join(SCHEDULE_CHOICES[:-1]) + ", or a custom list like "
                                        "'0: 1, 0; 0.3: 1, 1'), or block profiles ('input=1, output=0.5 | middle=0')."),
            ] + block_inputs() + [decorrelate_input()],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="The labelled grid (one image)."),
                io.Image.Output(display_name="images", tooltip="Every cell, row by row (a batch)."),
            ],
        )

    @classmethod
    def execute(cls, model, content, style, positive, negative, latent_image, vae, lambda_content_values,
                lambda_style_values, seed, steps, cfg, sampler_name, scheduler, row_axis="lambda_content",
                row_values="", decorrelate=decorrelation.OFF, **blocks) -> io.NodeOutput:
        check_options(cls, {"sampler_name": sampler_name, "scheduler": scheduler, "row_axis": row_axis,
                            "decorrelate": decorrelate})
        if row_axis == "schedule":  # before any cell is sampled
            hooks_on_dynamic_vram(model, "λ Grid (schedule rows)")
        # decorrelated once (the projector ignores λ), then every cell's fixed block profiles
        scaled = with_block_profiles(decorrelated({"content": content, "style": style, **blocks}, decorrelate))
        grid, batch = sample_grid(model, scaled["content"], scaled["style"], positive, negative, latent_image, vae,
                                  lambda_content_values, lambda_style_values, seed, steps, cfg, sampler_name,
                                  scheduler, row_axis, row_values)
        return io.NodeOutput(grid, batch, ui=ui.PreviewImage(grid, cls=cls))
