"""Which weights QR-LoRA adapts: architecture detection and target presets.

A target is one 2-D `Linear` weight, or a row slice of a fused weight (FLUX's
and SD3's `qkv`, FLUX's single-block `linear1`): the paper decomposes q, k and
v as separate projections, so a fused weight is split into its slices here.
Keys are ComfyUI's diffusion-model state-dict keys without the
`diffusion_model.` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .errors import BasisMismatchError, RuntimeSupportError, TargetError

# Every architecture the tables below know: its id (in files, presets, block groups) → the models users know it by.
ARCHITECTURE_NAMES = {
    "sd15": "SD1.5", "sdxl": "SDXL", "sd3": "SD3", "flux": "FLUX", "flux2": "FLUX.2", "chroma": "Chroma",
    "qwen_image": "Qwen-Image", "lumina2": "Lumina 2/Z-Image", "hidream": "HiDream", "wan": "Wan",
    "longcat": "LongCat-Image", "ovis": "Ovis-Image", "mage_flow": "Mage-Flow", "ernie": "ERNIE-Image",
    "krea2": "Krea 2", "anima": "Anima", "ltx2": "LTX-2",
}
ARCHITECTURES = tuple(ARCHITECTURE_NAMES)
# Architectures whose bases, merges and exports work but whose training Train ΔR cannot run: why, and the way out.
# LTX-2 does run on a plain video latent, but wrongly: without the sampler's `latent_shapes` ComfyUI 0.33's LTXAV
# takes the batch's first sample as the video and its second as the audio (av_model.separate_audio_and_video_latents).
UNTRAINABLE = {
    "ltx2": "LTX-2 denoises video and audio latents packed together (ComfyUI's LTXAV latent), which Train ΔR "
            "does not build: its trainer feeds one plain latent per sample. Decompose, Merge and Export work on "
            "LTX-2; train its ΔR elsewhere or wait for a version of the pack that builds LTX-2's latents.",
}
KNOWN_MODELS = ", ".join(ARCHITECTURE_NAMES.values())
PRESETS = ("paper", "paper-self-attention", "attention", "attention+mlp", "custom")
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")


@dataclass(frozen=True)
class Target:
    """One adapted weight: `key` (a state-dict key ending in `.weight`), optionally its rows `offset:offset+size`."""

    name: str
    key: str
    offset: int | None = None
    size: int | None = None

    @property
    def is_slice(self) -> bool:
        return self.offset is not None

    def rows(self, full_rows: int) -> slice:
        if self.offset is None:
            return slice(0, full_rows)
        return slice(self.offset, self.offset + self.size)

    def to_json(self) -> dict:
        d = {"name": self.name, "key": self.key}
        if self.is_slice:
            d.update(offset=self.offset, size=self.size)
        return d

    @staticmethod
    def from_json(d: Mapping) -> "Target":
        return Target(d["name"], d["key"], d.get("offset"), d.get("size"))


@dataclass(frozen=True)
class TargetSet:
    """The targets of one model under one preset, in a fixed order."""

    arch: str
    preset: str
    targets: tuple[Target, ...]
    regex: str | None = None
    # (rows, cols) of every weight key the targets touch: lets a ΔR file be
    # exported or checked against a model without the model at hand.
    shapes: Mapping[str, tuple[int, int]] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.targets)

    def __iter__(self):
        return iter(self.targets)

    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def describe(self) -> str:
        fused = sum(t.is_slice for t in self.targets)
        extra = f" /{self.regex}/" if self.regex else ""
        return f"{self.arch} preset '{self.preset}'{extra}: {len(self)} targets ({fused} row slices of fused weights)"

    def shape(self, t: Target) -> tuple[int, int]:
        """(rows, cols) of a target's matrix: the slice's rows for a fused weight's q/k/v."""
        rows, cols = self.shapes[t.key]
        return (t.size if t.is_slice else rows), cols

    def check_model(self, shapes: Mapping[str, Sequence[int]], arch: str | None, what: str, made: str,
                    fix: str) -> None:
        """Refuse a model whose architecture or target shapes differ: the one "does this fit?" rule
        (ΔR files and bases both ask it)."""
        if arch and arch != self.arch:
            raise BasisMismatchError(f"{what} was {made} on {self.arch.upper()}, but the model is {arch.upper()}: "
                                     f"{fix}.")
        for key, shape in self.shapes.items():
            live = shapes.get(key)
            if live is None or tuple(live[:2]) != tuple(shape):
                raise BasisMismatchError(
                    f"{what} targets {key} {list(shape)}, but the model has "
                    f"{'no such weight' if live is None else list(live)}: it was {made} on a different model "
                    f"size; {fix}.")

    def to_json(self) -> dict:
        return {"arch": self.arch, "preset": self.preset, "regex": self.regex,
                "targets": [t.to_json() for t in self.targets],
                "shapes": {k: list(v) for k, v in self.shapes.items()}}

    @staticmethod
    def from_json(d: Mapping) -> "TargetSet":
        shapes = {k: tuple(v) for k, v in d.get("shapes", {}).items()}
        return TargetSet(d["arch"], d["preset"], tuple(Target.from_json(t) for t in d["targets"]), d.get("regex"), shapes)


@dataclass(frozen=True)
class _Candidate:
    target: Target
    tags: frozenset = field(default_factory=frozenset)


def strip_prefix(key: str) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return key


def normalize_shapes(shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """Map state-dict keys (any of ComfyUI's prefixes) to shapes, keeping diffusion-model keys only."""
    out = {}
    has_prefix = any(k.startswith(_PREFIXES) for k in shapes)
    for k, s in shapes.items():
        if has_prefix and not k.startswith(_PREFIXES):
            continue  # text encoders, VAE: not ours to adapt
        out[strip_prefix(k)] = tuple(int(x) for x in s)
    return out


@dataclass(frozen=True)
class CoreModel:
    """How ComfyUI itself identified a loaded model: the names of its `comfy.supported_models` config class
    and of the ones that class derives from (most specific first), and the `unet_config` its detection read
    from the checkpoint. ComfyUI's own answer outranks the pack's key rules, which cannot tell every model
    that reuses another's keys (Mage-Flow and Ovis have Qwen-Image's `txt_norm`, LongCat-Image FLUX's blocks)."""

    classes: tuple[str, ...]
    unet_config: Mapping = field(default_factory=dict)

    @property
    def name(self) -> str:
        image_model = self.unet_config.get("image_model")
        return self.classes[0] + (f" (image_model '{image_model}')" if image_model else "")


# ComfyUI's config classes → the pack's architectures. A subclass not listed inherits its base's entry
# (SDXL's SSD-1B, Wan's image-to-video), found through CoreModel.classes.
_CORE_ARCHITECTURES = {
    "SD15": "sd15", "SD20": "sd15", "Stable_Zero123": "sd15",
    "SDXL": "sdxl", "SDXLRefiner": "sdxl",
    "SD3": "sd3",
    "Flux": "flux", "Flux2": "flux2", "Chroma": "chroma",
    "QwenImage": "qwen_image", "Lumina2": "lumina2", "HiDream": "hidream", "WAN21_T2V": "wan",
    "LongCatImage": "longcat", "MageFlow": "mage_flow", "ErnieImage": "ernie", "Krea2": "krea2", "Anima": "anima",
    "LTXAV": "ltx2",  # LTX-2's audio+video DiT; LTX-Video (LTXV, its base class) has no table here
}


def core_architecture(core: CoreModel) -> str | None:
    """The pack's architecture for the model ComfyUI identified; None for one the pack has no table for."""
    for cls in core.classes:
        if cls in _CORE_ARCHITECTURES:
            arch = _CORE_ARCHITECTURES[cls]
            if arch == "flux" and core.unet_config.get("yak_mlp"):
                return "ovis"  # Ovis-Image loads as FLUX's config with gated MLPs (gate/up/down_proj)
            return arch
    return None


def detect_architecture(keys: Iterable[str] | Mapping[str, Sequence[int]], core: CoreModel | None = None) -> str | None:
    """Name the architecture; None if unknown.

    `core`: ComfyUI's identification of the loaded model; when given it decides. Otherwise the state dict's
    keys (prefix optional) decide by rules mirroring ComfyUI's detection; pass the shapes (a mapping) to tell
    apart the models that differ only in shapes (Mage-Flow from Qwen-Image, LongCat-Image from FLUX).
    """
    if core is not None:
        return core_architecture(core)
    shapes = normalize_shapes(keys) if isinstance(keys, Mapping) else None
    keys = set(shapes) if shapes is not None else {strip_prefix(k) for k in keys}
    if shapes is not None and (by_shape := _detect_by_shape(shapes)):
        return by_shape
    for arch, marker in _NEWER_MARKERS:
        if marker in keys:
            return arch if arch != _UNKNOWN else None
    if "double_blocks.0.img_attn.qkv.weight" in keys:
        return "flux"
    if "joint_blocks.0.x_block.attn.qkv.weight" in keys:
        return "sd3"
    if any(".transformer_blocks.0.attn1.to_q.weight" in k for k in keys):
        # SDXL conditions on pooled text and image size through `label_emb`; SD1.x/2.x do not.
        return "sdxl" if "label_emb.0.0.weight" in keys else "sd15"
    return None


def check_trainable(arch: str) -> None:
    """Refuse to train an architecture in UNTRAINABLE, naming the problem and the way out."""
    if arch in UNTRAINABLE:
        raise RuntimeSupportError(f"Train ΔR cannot train {ARCHITECTURE_NAMES[arch]}: {UNTRAINABLE[arch]}")


def _detect_by_shape(shapes: Mapping[str, tuple]) -> str | None:
    """The models that reuse another's keys and differ from it in shapes only, told apart as
    comfy.model_detection does."""
    txt_norm, proj_out = shapes.get("txt_norm.weight"), shapes.get("proj_out.weight")
    if txt_norm and proj_out and txt_norm[0] == 2560 and proj_out[0] == 128:
        return "mage_flow"  # Qwen-Image's blocks; Qwen-Image's txt_norm and proj_out are 3584 and 64 wide
    txt_in = shapes.get("txt_in.weight")
    if ("double_blocks.0.img_attn.qkv.weight" in shapes and "double_blocks.0.img_mlp.gate_proj.weight" not in shapes
            and txt_in is not None and len(txt_in) == 2 and txt_in[1] == 3584 and "vector_in.in_layer.weight" not in shapes):
        return "longcat"  # FLUX's blocks with a 3584-wide text input and no pooled-vector input
    return None


def _slices(key: str, parts: Sequence[tuple[str, int, int]], tags: set) -> list[_Candidate]:
    base = key[: -len(".weight")]
    return [_Candidate(Target(f"{base}[{p}]", key, off, size), frozenset(tags)) for p, off, size in parts]


def _whole(key: str, tags: set) -> _Candidate:
    return _Candidate(Target(key[: -len(".weight")], key), frozenset(tags))


def _flux_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    out = []
    doubles = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"double_blocks\.(\d+)\.", k))})
    singles = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"single_blocks\.(\d+)\.", k))})
    for n in doubles:
        for stream in ("img", "txt"):
            p = f"double_blocks.{n}.{stream}_"
            qkv = p + "attn.qkv.weight"
            h = shapes[qkv][0] // 3
            out += _slices(qkv, [("q", 0, h), ("k", h, h), ("v", 2 * h, h)], {"attn", "paper"})
            out.append(_whole(p + "attn.proj.weight", {"attn", "paper"}))
            out += _wholes(shapes, p + "mlp.", ("0", "2", "gate_proj", "up_proj", "down_proj"), {"mlp", "paper"})
    for n in singles:
        p = f"single_blocks.{n}."
        h = shapes[p + "linear2.weight"][0]
        rows = shapes[p + "linear1.weight"][0]
        out += _slices(p + "linear1.weight", [("q", 0, h), ("k", h, h), ("v", 2 * h, h)], {"attn", "paper"})
        out += _slices(p + "linear1.weight", [("mlp", 3 * h, rows - 3 * h)], {"mlp"})
        out.append(_whole(p + "linear2.weight", {"mlp"}))
    return out


def _sd3_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    out = []
    blocks = sorted({int(m.group(1)) for k in shapes if (m := re.match(r"joint_blocks\.(\d+)\.", k))})
    for n in blocks:
        for stream in ("x_block", "context_block"):
            for attn, tags in (("attn", {"attn", "paper"}), ("attn2", {"attn"})):  # attn2: SD3.5's dual attention
                p = f"joint_blocks.{n}.{stream}.{attn}."
                if p + "qkv.weight" not in shapes:
                    continue
                h = shapes[p + "qkv.weight"][0] // 3
                out += _slices(p + "qkv.weight", [("q", 0, h), ("k", h, h), ("v", 2 * h, h)], tags)
                if p + "proj.weight" in shapes:  # the last context block is `pre_only`: no output projection
                    out.append(_whole(p + "proj.weight", tags))
            for fc in ("fc1", "fc2"):
                key = f"joint_blocks.{n}.{stream}.mlp.{fc}.weight"
                if key in shapes:
                    out.append(_whole(key, {"mlp"}))
    return out


_UNET_ATTN = re.compile(r".*transformer_blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)\.weight$")
_UNET_MLP = re.compile(r".*transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)\.weight$")


def _unet_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    out = []
    for k in shapes:
        if m := _UNET_ATTN.match(k):
            out.append(_whole(k, {"attn", "paper"} | ({"self-attn"} if m.group(1) == "attn1" else set())))
        elif _UNET_MLP.match(k):
            out.append(_whole(k, {"mlp"}))
    return out


# The 2025 models (ComfyUI 0.8's Flux2, Chroma, QwenImage, Lumina2/ZImage, HiDream, WAN21/WAN22; 0.33's
# Ernie Image, Krea 2, Ovis-Image). Each is detected from the keys ComfyUI's own model_detection reads, in
# the same order (FLUX.2, Chroma and Ovis share FLUX's block layout, so they are told apart before FLUX;
# Ovis and Lens carry Qwen-Image's `txt_norm`, so they come before it).
_UNKNOWN = "?"  # a model ComfyUI knows and the pack has no table for
_NEWER_MARKERS = (
    (_UNKNOWN, "transformer_blocks.0.img_mlp.w1.weight"),  # Lens: fused qkv per stream, gated MLPs
    ("ovis", "double_blocks.0.img_mlp.gate_proj.weight"),  # FLUX's blocks with gated MLPs and a text norm
    ("flux2", "double_stream_modulation_img.lin.weight"),
    ("chroma", "distilled_guidance_layer.in_proj.weight"),  # Chroma and Chroma Radiance
    ("wan", "head.modulation"),  # Wan 2.1 and 2.2, every model_type
    ("lumina2", "cap_embedder.1.weight"),  # Lumina Image 2.0 and Z-Image
    ("hidream", "caption_projection.0.linear.weight"),
    ("qwen_image", "txt_norm.weight"),
    ("krea2", "txtfusion.projector.weight"),
    ("ernie", "layers.0.mlp.linear_fc2.weight"),
    ("anima", "llm_adapter.blocks.0.cross_attn.q_proj.weight"),  # Cosmos-Predict2's blocks + a text adapter
    ("ltx2", "audio_adaln_single.linear.weight"),  # LTX-2: LTX-Video's blocks with an audio stream
)


def _block_numbers(shapes: Mapping[str, tuple], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in shapes if (m := pattern.match(k))})


def _wholes(shapes: Mapping[str, tuple], prefix: str, names: Sequence[str], tags: set) -> list[_Candidate]:
    return [_whole(prefix + n + ".weight", tags) for n in names if prefix + n + ".weight" in shapes]


def _qwen_image_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """Qwen-Image: 60 dual-stream blocks with separate projections (image: to_q/k/v, to_out.0; text:
    add_q/k/v_proj, to_add_out) and one MLP per stream. Every block is dual-stream, as FLUX's double
    blocks are, so the paper's roles cover all of them: `paper` equals `attention+mlp`."""
    out = []
    for n in _block_numbers(shapes, "transformer_blocks."):
        p = f"transformer_blocks.{n}."
        out += _wholes(shapes, p + "attn.", ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj",
                                             "add_v_proj", "to_add_out"), {"attn", "paper"})
        out += _wholes(shapes, p, ("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2"),
                       {"mlp", "paper"})
    return out


def _lumina2_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """Lumina 2 / Z-Image: a single-stream DiT (`layers`, fused qkv, SwiGLU w1/w2/w3) after one-stream
    refiners (`noise_refiner`: image only, `context_refiner`: text only). The refiners hold one stream's
    weights, as FLUX's double blocks do: `paper` takes their attention and MLP; in the joint layers it
    takes q, k, v, as in FLUX's single blocks."""
    out = []
    for group, joint in (("noise_refiner", False), ("context_refiner", False), ("layers", True)):
        for n in _block_numbers(shapes, group + "."):
            p = f"{group}.{n}."
            qkv = p + "attention.qkv.weight"
            # Z-Image has as many key/value heads as query heads; Lumina 2 fewer (grouped-query attention).
            q_rows, kv_rows = _lumina2_qkv_rows(shapes, p)
            out += _slices(qkv, [("q", 0, q_rows), ("k", q_rows, kv_rows), ("v", q_rows + kv_rows, kv_rows)],
                           {"attn", "paper"})
            out += _wholes(shapes, p, ("attention.out",), {"attn"} if joint else {"attn", "paper"})
            out += _wholes(shapes, p, ("feed_forward.w1", "feed_forward.w3", "feed_forward.w2"),
                           {"mlp"} if joint else {"mlp", "paper"})
    return out


def _lumina2_qkv_rows(shapes: Mapping[str, tuple], block: str) -> tuple[int, int]:
    """Rows of q and of each of k, v in the fused qkv: q has as many rows as the output projection has inputs
    (heads × head size), k and v split the rest equally."""
    q_rows = shapes[block + "attention.out.weight"][1]
    return q_rows, (shapes[block + "attention.qkv.weight"][0] - q_rows) // 2


def _hidream_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """HiDream-I1: dual-stream blocks (image to_q/k/v/out, text to_q_t/…/out_t; image MLP a mixture of
    experts, text MLP a SwiGLU) then single-stream blocks (to_q/k/v/out, MoE MLP). The MoE router
    (`ff_i.gate`, one row per expert) is not a projection of the hidden state and is left alone."""
    out = []
    experts = ("w1", "w3", "w2")
    for group, dual in (("double_stream_blocks", True), ("single_stream_blocks", False)):
        for n in _block_numbers(shapes, group + "."):
            p = f"{group}.{n}.block."
            out += _wholes(shapes, p + "attn1.", ("to_q", "to_k", "to_v"), {"attn", "paper"})
            out += _wholes(shapes, p + "attn1.", ("to_out",), {"attn", "paper"} if dual else {"attn"})
            if dual:
                out += _wholes(shapes, p + "attn1.", ("to_q_t", "to_k_t", "to_v_t", "to_out_t"), {"attn", "paper"})
            mlp = {"mlp", "paper"} if dual else {"mlp"}
            out += _wholes(shapes, p + "ff_i.shared_experts.", experts, mlp)
            for e in _block_numbers(shapes, p + "ff_i.experts."):
                out += _wholes(shapes, p + f"ff_i.experts.{e}.", experts, mlp)
            out += _wholes(shapes, p + "ff_t.", experts, mlp)
    return out


def _wan_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """Wan 2.1/2.2: video blocks with self-attention over the video tokens and cross-attention to the text
    (q, k, v, o each), then an MLP (ffn.0, ffn.2): the SD UNet's attn1/attn2 design, so `paper` takes both
    attentions, as the paper does on SDXL. Image-to-video's extra image keys (cross_attn.k_img/v_img) are
    attention too."""
    out = []
    for n in _block_numbers(shapes, "blocks."):
        p = f"blocks.{n}."
        out += _wholes(shapes, p + "self_attn.", ("q", "k", "v", "o"), {"attn", "paper", "self-attn"})
        out += _wholes(shapes, p + "cross_attn.", ("q", "k", "v", "o", "k_img", "v_img"), {"attn", "paper"})
        out += _wholes(shapes, p, ("ffn.0", "ffn.2"), {"mlp"})
    return out


def _ernie_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """ERNIE-Image: one stack of single-stream layers (image and text tokens together; separate q, k, v,
    out; gated MLP gate_proj/up_proj/linear_fc2): FLUX's single blocks without the fused weights, so
    `paper` takes q, k, v, as it does there."""
    out = []
    for n in _block_numbers(shapes, "layers."):
        p = f"layers.{n}."
        out += _wholes(shapes, p + "self_attention.", ("to_q", "to_k", "to_v"), {"attn", "paper"})
        out += _wholes(shapes, p + "self_attention.", ("to_out.0",), {"attn"})
        out += _wholes(shapes, p + "mlp.", ("gate_proj", "up_proj", "linear_fc2"), {"mlp"})
    return out


def _krea2_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """Krea 2: single-stream blocks (wq, wk, wv with fewer key/value heads, an attention output gate, wo;
    SwiGLU gate/up/down) after a text-fusion transformer whose blocks hold the text stream alone. As in
    Lumina 2, `paper` takes the one-stream text blocks whole and q, k, v in the joint blocks. The fusion's
    `projector` mixes the text encoder's layers, not the hidden state, and is left alone."""
    out = []
    for group in ("txtfusion.layerwise_blocks", "txtfusion.refiner_blocks", "blocks"):
        joint = group == "blocks"
        for n in _block_numbers(shapes, group + "."):
            p = f"{group}.{n}."
            out += _wholes(shapes, p + "attn.", ("wq", "wk", "wv"), {"attn", "paper"})
            out += _wholes(shapes, p + "attn.", ("gate", "wo"), {"attn"} if joint else {"attn", "paper"})
            out += _wholes(shapes, p + "mlp.", ("gate", "up", "down"), {"mlp"} if joint else {"mlp", "paper"})
    return out


def _anima_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """Anima (Cosmos-Predict2's DiT): blocks with self-attention over the image tokens and cross-attention
    to the text (q/k/v/output_proj each), then an MLP (layer1, layer2): the SD UNet's and Wan's design, so
    `paper` takes both attentions, as on SDXL. The text adapter (`llm_adapter`) maps the text encoder's
    features before the blocks see them, and ComfyUI runs it while preparing the conditioning at sampling:
    it is left to `custom`."""
    out = []
    for n in _block_numbers(shapes, "blocks."):
        p = f"blocks.{n}."
        projections = ("q_proj", "k_proj", "v_proj", "output_proj")
        out += _wholes(shapes, p + "self_attn.", projections, {"attn", "paper", "self-attn"})
        out += _wholes(shapes, p + "cross_attn.", projections, {"attn", "paper"})
        out += _wholes(shapes, p + "mlp.", ("layer1", "layer2"), {"mlp"})
    return out


def _ltx2_candidates(shapes: Mapping[str, tuple]) -> list[_Candidate]:
    """LTX-2 (ComfyUI's LTXAV): one stack of blocks, each with a video stream (self-attention attn1,
    cross-attention to the text attn2, MLP ff), an audio stream of the same design (audio_attn1/2, audio_ff)
    and attention between them (audio_to_video_attn, video_to_audio_attn). The video stream is the SD
    UNet's and Wan's attn1/attn2 design, so `paper` takes both of its attentions, as on Wan. The audio
    stream and the cross-modal attention are left out of `paper`: the paper separates an image's content
    and style, which the video stream carries; `attention` and `attention+mlp` take every block's
    attention (audio and cross-modal too) and MLPs. The optional per-head attention gates (to_gate_logits,
    one row per head) gate outputs rather than project them: `custom` only."""
    out = []
    projections = ("to_q", "to_k", "to_v", "to_out.0")
    for n in _block_numbers(shapes, "transformer_blocks."):
        p = f"transformer_blocks.{n}."
        out += _wholes(shapes, p + "attn1.", projections, {"attn", "paper", "self-attn"})
        out += _wholes(shapes, p + "attn2.", projections, {"attn", "paper"})
        out += _wholes(shapes, p + "ff.net.", ("0.proj", "2"), {"mlp"})
        for attn in ("audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
            out += _wholes(shapes, p + attn + ".", projections, {"attn"})
        out += _wholes(shapes, p + "audio_ff.net.", ("0.proj", "2"), {"mlp"})
    return out


_CANDIDATES = {"flux": _flux_candidates, "sd3": _sd3_candidates, "sdxl": _unet_candidates, "sd15": _unet_candidates,
               # FLUX.2 and Chroma keep FLUX.1's block keys (fused qkv; single blocks' linear1 = q, k, v, MLP in).
               "flux2": _flux_candidates, "chroma": _flux_candidates, "qwen_image": _qwen_image_candidates,
               "lumina2": _lumina2_candidates, "hidream": _hidream_candidates, "wan": _wan_candidates,
               # LongCat-Image and Ovis-Image are FLUX.1's blocks (Ovis with gated MLPs); Mage-Flow is Qwen-Image's.
               "longcat": _flux_candidates, "ovis": _flux_candidates, "mage_flow": _qwen_image_candidates,
               "ernie": _ernie_candidates, "krea2": _krea2_candidates, "anima": _anima_candidates,
               "ltx2": _ltx2_candidates}

_PRESET_TAGS = {
    "paper": lambda tags: "paper" in tags,
    "paper-self-attention": lambda tags: "self-attn" in tags,
    "attention": lambda tags: "attn" in tags,
    "attention+mlp": lambda tags: "attn" in tags or "mlp" in tags,
}


def select_targets(shapes: Mapping[str, Sequence[int]], preset: str = "paper", regex: str | None = None,
                   arch: str | None = None, core: CoreModel | None = None) -> TargetSet:
    """Build the target set of a model from its state-dict shapes.

    `shapes` maps keys (with or without ComfyUI's prefixes) to shapes. `arch`
    is detected when not given (from `core`, ComfyUI's identification, when given). `preset="custom"` matches `regex` (re.search)
    against target names, e.g. `img_attn\\.qkv\\[q\\]` or `attn1\\.to_q`; it
    also works on architectures this module does not know.
    """
    shapes = normalize_shapes(shapes)
    if preset not in PRESETS:
        raise TargetError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}.")
    arch = arch or detect_architecture(shapes, core) or "unknown"
    if arch not in ARCHITECTURES and arch != "unknown":
        raise TargetError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHITECTURES)} or leave it to detection.")
    if arch == "unknown" and preset != "custom":
        what = (f"ComfyUI identifies this model as {core.name}, which QR-LoRA's presets do not cover" if core
                else "could not recognise the architecture from the state-dict keys")
        raise TargetError(
            f"{what} (known: {KNOWN_MODELS}). "
            "Use preset 'custom' with a regular expression over weight keys, e.g. 'attn.*(q|k|v)_proj'."
        )
    candidates = _CANDIDATES[arch](shapes) if arch in _CANDIDATES else []
    if preset == "custom":
        if not regex:
            raise TargetError("preset 'custom' needs a regular expression over target names, e.g. 'img_attn\\.qkv'.")
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise TargetError(f"invalid regular expression {regex!r}: {e}.") from None
        covered = {c.target.key for c in candidates}
        pool = [c.target for c in candidates]
        pool += [Target(k[: -len(".weight")], k) for k in shapes if k.endswith(".weight") and k not in covered]
        chosen = [t for t in pool if pattern.search(t.name)]
        bad = [t for t in chosen if len(shapes[t.key]) != 2]
        if bad:
            raise TargetError(
                f"regex {regex!r} matches weights that are not 2-D Linear weights, e.g. {bad[0].key} {list(shapes[bad[0].key])}; "
                "QR-LoRA adapts Linear layers only: narrow the regex."
            )
    else:
        if preset == "paper-self-attention" and arch not in ("sd15", "sdxl", "wan", "anima", "ltx2"):
            raise TargetError(f"preset 'paper-self-attention' is the SD1.5/SDXL UNet reading of the paper; for {arch} use 'paper'.")
        keep = _PRESET_TAGS[preset]
        chosen = [c.target for c in candidates if keep(c.tags)]
    if not chosen:
        what = f"regex {regex!r}" if preset == "custom" else f"preset '{preset}'"
        raise TargetError(f"{what} selects no weights of this {arch} model; pick another preset or widen the regex.")
    used = {t.key: shapes[t.key] for t in chosen}
    return TargetSet(arch, preset, tuple(chosen), regex if preset == "custom" else None, used)
