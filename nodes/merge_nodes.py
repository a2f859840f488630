"""Merge ΔR (λc, λs) onto a model, Export the merge as a standard LoRA, or schedule λ over the steps as hooks."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..qr_core import QRDelta
from ..qr_core.adapters.delta import DTYPES
from ..qr_core.merging.merge import DEFAULT_NAMING, NAMING_HELP, NAMINGS, export_merge
from ..qr_core.merging.lambda_schedule import resolve_schedule
from ..qr_core.merging import decorrelate as decorrelation
from ..qr_core.merging.klora import PATTERNS
from .services import folders
from .services.klora_patches import LAYERS, LAYERS_HELP
from .services.patches import klora_merge_onto, merge_onto
from .services.schedule_hooks import hooks_on_dynamic_vram, scheduled_hooks
from .decorrelation_inputs import decorrelate_input, decorrelated
from .lambda_inputs import block_inputs, schedule_inputs, with_block_profiles
from .options import check_options
from .sockets import CATEGORY, QRDeltaType

EXTRA_SLOTS = 2  # further ΔR beyond content and style (paper Fig. 9: N-way composition)


def _lambda(id_: str, what: str) -> io.Float.Input:
    return io.Float.Input(id_, default=1.0, min=-2.0, max=2.0, step=0.01,
                          tooltip=f"Weight λ of the {what} ΔR (paper eq. 7); 0 leaves it out, 1 as trained.")


def mix_inputs() -> list:
    """Content, style and extra ΔR with their λ (shared by Merge and Export)."""
    inputs = [
        QRDeltaType.Input("content", tooltip="The content ΔR (e.g. trained on 'a photo of a <c> dog')."),
        QRDeltaType.Input("style", tooltip="The style ΔR (e.g. trained on 'a cat in <s> style')."),
        _lambda("lambda_content", "content"),
        _lambda("lambda_style", "style"),
    ]
    for i in range(1, EXTRA_SLOTS + 1):
        inputs += [QRDeltaType.Input(f"extra_{i}", optional=True, tooltip=f"Optional further ΔR #{i}, mixed in with its own λ."),
                   _lambda(f"lambda_extra_{i}", f"extra #{i}")]
    inputs.append(io.Boolean.Input(
        "allow_mixed_bases", default=False,
        tooltip="ΔR trained in different bases Q cannot be added; when on, each basis's term is applied on its own "
                "(exact, but the rank adds up). Off: such a mix is refused."))
    return inputs


def collect(kwargs: dict) -> tuple[list[QRDelta], list[float]]:
    deltas, weights = [], []
    for slot, lam in [("content", "lambda_content"), ("style", "lambda_style")] + [
            (f"extra_{i}", f"lambda_extra_{i}") for i in range(1, EXTRA_SLOTS + 1)]:
        if kwargs.get(slot) is not None:
            deltas.append(kwargs[slot])
            weights.append(float(kwargs.get(lam, 1.0)))
    if not deltas:
        raise ValueError("nothing to merge: connect at least one ΔR.")
    return deltas, weights


def collect_blocks(kwargs: dict) -> tuple[list[QRDelta], list[float]]:
    """collect(), with content and style ΔR scaled by their block profiles."""
    return collect(with_block_profiles(kwargs))


MERGE_MODES = ("add",) + tuple(f"K-LoRA {p}" for p in PATTERNS)


def merge_mode_inputs() -> list:
    """Merge ΔR's ways of combining content and style (defaults: the paper's plain addition, no decorrelation)."""
    return [
        io.Combo.Input("merge_mode", options=list(MERGE_MODES), default="add", optional=True,
                       tooltip="add: W + Q(λc·ΔR_c + λs·ΔR_s) (paper eq. 7). K-LoRA (training-free, CVPR 2025): per "
                               "layer and sampling step either λc·QΔR_c or λs·QΔR_s, the one with the larger top-K "
                               "|ΔW| sum, style weighted up over the steps (s*: the reference's default, more style; "
                               "s: more texture detail). Extras are added in either mode."),
        io.Combo.Input("klora_layers", options=list(LAYERS), default="attention", optional=True,
                       tooltip="Where K-LoRA chooses. " + LAYERS_HELP + "."),
        decorrelate_input(),
    ]


def _summary(deltas, weights) -> str:
    return " + ".join(f"{w:g}·{d.name or 'ΔR'}" for d, w in zip(deltas, weights))


class QRMergeDeltas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRAMergeDeltas",
            display_name="QR-LoRA Merge ΔR (λc, λs)",
            category=CATEGORY,
            description="Applies λc·ΔR_content + λs·ΔR_style (+ extras) as W + Q(Σλ ΔR) patches on a copy of the "
                        "model; the original model, other LoRAs and memory management are untouched.",
            inputs=[io.Model.Input("model", tooltip="The base model the ΔR were trained on.")] + mix_inputs()
            + block_inputs() + merge_mode_inputs(),
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The model with the merged ΔR applied.")],
        )

    @classmethod
    def execute(cls, model, allow_mixed_bases=False, merge_mode="add", klora_layers="attention",
                decorrelate=decorrelation.OFF, **kwargs) -> io.NodeOutput:
        check_options(cls, {"merge_mode": merge_mode, "klora_layers": klora_layers, "decorrelate": decorrelate})
        deltas, weights = collect_blocks(decorrelated(kwargs, decorrelate))
        text = _summary(deltas, weights) + (f"; decorrelated: {decorrelate}" if decorrelate != decorrelation.OFF else "")
        if merge_mode == "add":
            return io.NodeOutput(merge_onto(model, deltas, weights, allow_mixed_bases), ui=ui.PreviewText(text))
        if kwargs.get("content") is None or kwargs.get("style") is None:
            raise ValueError("K-LoRA chooses between a content and a style ΔR: connect both.")
        patched, plan = klora_merge_onto(model, deltas, weights, merge_mode.split()[-1], klora_layers,
                                         allow_mixed_bases)
        return io.NodeOutput(patched, ui=ui.PreviewText(f"{text}\n{plan.describe()}"))


class QRExportLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRAExportLoRA",
            display_name="QR-LoRA Export as LoRA",
            category=CATEGORY,
            description="Writes the merge Q(Σλ ΔR) as a standard LoRA file (lora_up = Q, lora_down = Σλ ΔR, "
                        "alpha = rank) into models/loras; ComfyUI's stock LoRA loaders apply it with no QR-LoRA code, "
                        "and with kohya naming (the default) so does diffusers for SDXL and FLUX.",
            is_output_node=True,
            inputs=mix_inputs() + [
                io.String.Input("lora_name", default="qr_lora_merge",
                                tooltip="File name in models/loras (no extension needed); an existing file (your "
                                        "own LoRAs live there) is kept unless overwrite is on."),
                io.Combo.Input("naming", options=list(NAMINGS), default=DEFAULT_NAMING,
                               tooltip="Key naming. " + NAMING_HELP),
                io.Combo.Input("dtype", options=list(DTYPES), default="fp16",
                               tooltip="Storage precision; fp32 reproduces Merge ΔR bit for bit in fp32 models."),
            ] + block_inputs() + [io.Boolean.Input("overwrite", default=False, optional=True,
                                                   tooltip=folders.OVERWRITE_HELP), decorrelate_input()],
            outputs=[],
        )

    @classmethod
    def execute(cls, lora_name, naming, dtype, allow_mixed_bases=False, overwrite=False,
                decorrelate=decorrelation.OFF, **kwargs) -> io.NodeOutput:
        check_options(cls, {"naming": naming, "dtype": dtype, "decorrelate": decorrelate})
        deltas, weights = collect_blocks(decorrelated(kwargs, decorrelate))
        target, note = folders.save_path("loras", lora_name, overwrite)
        path, _ = export_merge(deltas, weights, target, naming, dtype, allow_mixed_bases)
        return io.NodeOutput(ui=ui.PreviewText(f"wrote loras/{path.name}: {_summary(deltas, weights)}"
                                               + (f"\n{note}" if note else "")))


class QRScheduleHooks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="QRLoRAScheduleHooks",
            display_name="QR-LoRA λ over Steps (Hooks)",
            category=CATEGORY,
            description="Content and style ΔR as ComfyUI weight hooks whose λ follows a schedule over the sampling "
                        "steps (e.g. content alone while the layout forms, style joining later): each step samples "
                        "W + Q(λc·c(t)·ΔR_c + λs·s(t)·ΔR_s + Σ λₑ ΔRₑ). Attach the HOOKS to both the positive and "
                        "the negative conditioning (core 'Cond Pair Set Props' or 'Set Model Hooks on Cond') and "
                        "sample the unpatched model; they combine with core hook nodes like any hook.",
            inputs=[io.Model.Input("model", tooltip="The model you will sample with: the ΔR are checked against it.")]
            # no allow_mixed_bases: each ΔR is its own hook, so ΔR of different bases never need adding
            + [i for i in mix_inputs() if i.id != "allow_mixed_bases"] + schedule_inputs() + block_inputs()
            + [io.Hooks.Input("prev_hooks", optional=True, tooltip="Hooks to combine these with."),
               decorrelate_input()],
            outputs=[io.Hooks.Output(display_name="HOOKS", tooltip="One weight hook per ΔR, with its keyframes.")],
        )

    @classmethod
    def execute(cls, model, schedule, custom_schedule="", prev_hooks=None, decorrelate=decorrelation.OFF,
                **kwargs) -> io.NodeOutput:
        check_options(cls, {"decorrelate": decorrelate})
        plan = resolve_schedule(schedule, custom_schedule)
        deltas, weights = collect_blocks(decorrelated(kwargs, decorrelate))
        dynamic_note = hooks_on_dynamic_vram(model, "λ over Steps")
        hooks = scheduled_hooks(model, deltas, weights, plan, prev_hooks)
        text = f"{_summary(deltas, weights)}; λc, λs × {plan.describe()}"
        return io.NodeOutput(hooks, ui=ui.PreviewText(text + (f"\n{dynamic_note}" if dynamic_note else "")))
