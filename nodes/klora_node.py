"""K-LoRA on two ordinary LoRA files: per layer and sampling step, the content or the style LoRA."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io, ui

from ..qr_core.merging.klora import DEFAULT_PATTERN, PATTERNS
from .options import check_options
from .services.klora_patches import LAYERS, LAYERS_HELP, klora_onto, lora_file_patches
from .sockets import CATEGORY

PATTERN_HELP = ("Time scaling of the style score (reference code's constants): s* = (1.5·p + 1.275) mod 1.5, "
                "the default, more of the style; s = 1.5·p + 0.5, more texture detail (p: sampling progress, 0 first).")


def lora_files() -> list[str]:
    return [n for n in folder_paths.get_filename_list("loras") if n.lower().endswith(".safetensors")]


def _strength(id_: str, what: str) -> io.Float.Input:
    return io.Float.Input(id_, default=1.0, min=-2.0, max=2.0, step=0.01,
                          tooltip=f"Strength of the {what} LoRA where it is applied (like Load LoRA's strength_model); "
                                  "K-LoRA's choices do not depend on it.")


class QRKLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRAKLoRA",
            display_name="K-LoRA: Content + Style LoRA",
            category=CATEGORY,
            description="K-LoRA (CVPR 2025, training-free): on each layer both LoRAs patch, every sampling step "
                        "applies either the content or the style LoRA, the one with the larger sum of its top-K "
                        "|ΔW| entries (K = product of the ranks), the style's sum weighted up as sampling goes on. "
                        "Any sampler; the text-encoder part of the files is not applied (load it with Load LoRA "
                        "at model strength 0 if wanted).",
            inputs=[
                io.Model.Input("model", tooltip="The base model both LoRAs were trained on."),
                io.Combo.Input("content_lora", options=lora_files(),
                               tooltip="The subject/content LoRA (models/loras, .safetensors: kohya, diffusers, "
                                       "PEFT or ComfyUI naming)."),
                io.Combo.Input("style_lora", options=lora_files(), tooltip="The style LoRA (models/loras)."),
                _strength("strength_content", "content"),
                _strength("strength_style", "style"),
                io.Combo.Input("pattern", options=list(PATTERNS), default=DEFAULT_PATTERN, tooltip=PATTERN_HELP),
                io.Combo.Input("layers", options=list(LAYERS), default="attention", tooltip=LAYERS_HELP),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The model sampling with K-LoRA's choice per step.")],
        )

    @classmethod
    def execute(cls, model, content_lora, style_lora, strength_content=1.0, strength_style=1.0,
                pattern=DEFAULT_PATTERN, layers="attention") -> io.NodeOutput:
        check_options(cls, {"content_lora": content_lora, "style_lora": style_lora, "pattern": pattern, "layers": layers})
        content = lora_file_patches(model, folder_paths.get_full_path_or_raise("loras", content_lora))
        style = lora_file_patches(model, folder_paths.get_full_path_or_raise("loras", style_lora))
        patched, plan = klora_onto(model, content, style, strength_content, strength_style, pattern, layers)
        return io.NodeOutput(patched, ui=ui.PreviewText(f"{content_lora} × {strength_content:g}, {style_lora} × "
                                                        f"{strength_style:g}: {plan.describe()}"))
