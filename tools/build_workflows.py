"""Writes the pack's example workflows (workflows/*.json, UI format as ComfyUI's front end saves it) and its
subgraph blueprints (subgraphs/*.json, which ComfyUI ≥ 0.8 offers under "Subgraph Blueprints").

Widget order and input sockets come from a live server's /object_info, so the
files match the nodes exactly:

    python tools/build_workflows.py --object-info http://127.0.0.1:8188/object_info
    python tools/build_workflows.py --object-info 0.8.0=object_info.json
    python tools/build_workflows.py --object-info http://127.0.0.1:8188/object_info \
        http://127.0.0.1:8189/object_info http://127.0.0.1:8190/object_info
        # 0.3.64, 0.8.0 and 0.33.0 (the servers tell their versions): every workflow without declared versions is
        # written from 0.3.64's nodes, plus the nodes only newer versions have; one that declares versions
        # (extra.qr_lora_requires_comfyui, …_below) from the oldest given ComfyUI it is for (the dataset
        # workflows: one from 0.8's nodes, one from 0.33's)
    python tools/build_workflows.py --thumbnails-only   # after tests/live wrote docs/workflow_*.png

tests/live validates the result against a running ComfyUI and in a browser. The recipes and the model-family
table are here; tools/workflow_graph.py lays out the nodes, links, groups and blueprints.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# A sibling module: `python tools/build_workflows.py` puts this folder first on sys.path.
from workflow_graph import Workflow, blueprint, input_spec, link_to_widget

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workflows"

HF = "https://huggingface.co"
MODELS = {
    "sd_xl_base_1.0.safetensors": (f"{HF}/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors?download=true", "checkpoints"),
    "sd3.5_large_fp8_scaled.safetensors": (f"{HF}/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/sd3.5_large_fp8_scaled.safetensors?download=true", "checkpoints"),
    "flux1-dev.safetensors": (f"{HF}/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"),
    "clip_l.safetensors": (f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders"),
    "t5xxl_fp16.safetensors": (f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors", "text_encoders"),
    "t5xxl_fp8_e4m3fn_scaled.safetensors": (f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
    "ae.safetensors": (f"{HF}/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors", "vae"),
    # FLUX.2-dev and Qwen-Image: the Comfy-Org repackaged files that ComfyUI's examples name
    # (comfyanonymous/ComfyUI_examples: flux2/README.md, qwen_image/README.md).
    "flux2_dev_fp8mixed.safetensors": (f"{HF}/Comfy-Org/flux2-dev/resolve/main/split_files/diffusion_models/flux2_dev_fp8mixed.safetensors", "diffusion_models"),
    "mistral_3_small_flux2_fp8.safetensors": (f"{HF}/Comfy-Org/flux2-dev/resolve/main/split_files/text_encoders/mistral_3_small_flux2_fp8.safetensors", "text_encoders"),
    "flux2-vae.safetensors": (f"{HF}/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors", "vae"),
    "qwen_image_fp8_e4m3fn.safetensors": (f"{HF}/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_fp8_e4m3fn.safetensors", "diffusion_models"),
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": (f"{HF}/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors", "text_encoders"),
    "qwen_image_vae.safetensors": (f"{HF}/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors", "vae"),
}

# The paper's prompts and settings (QR-LoRA, ICCV 2025).
CONTENT_PROMPT = "a photo of a <c> dog"
STYLE_PROMPT = "a cat in <s> style"
MERGE_PROMPT = "a <c> dog in <s> style"
TRAIN = dict(steps=500, learning_rate=1e-4, optimizer="AdamW", batch_size=1, noise_draws=1, seed=0,
             timestep_sampling="uniform", loss_space="native", training_dtype="bf16", storage_dtype="bf16",
             gradient_checkpointing=True, mode="ΔR only", triangular=False, save_every=100)
# gradient_checkpointing on in every workflow, as the node's default and ComfyUI's own trainer: a first run
# that fits beats a faster one that runs out of memory (turn it off where memory allows).
# FLUX guidance: the official training passes 1 (train_deltaR_*.sh: --guidance_scale=1); 3.5 is for generating.
TRAIN_GUIDANCE, SAMPLE_GUIDANCE = 1.0, 3.5
TRAIN_PX = 512
# Room for the pack's front-end panel (js/qr_lora.js) below the widgets.
PANEL_EXTRA = {"QRLoRATrainDelta": 150, "QRLoRADecompose": 64, "QRLoRAMergeDeltas": 96, "QRLoRALoadDelta": 70}
GROUP_COLORS = {"models": "#3f789e", "content": "#88A", "style": "#a1309b", "merge": "#8A8", "extra": "#b58b2a"}


def graph(info: dict) -> Workflow:
    """An empty workflow on these nodes that lists the pack's model downloads and leaves room for its panels."""
    return Workflow(info, models=MODELS, panel_extra=PANEL_EXTRA)


# --------------------------------------------------------------------------- model families

# Step 1's note per family (NOTE_MODELS_FP8: the 2025 models' fp8 files); `files`: the files and their folders.
# Memory as the README's "Your first workflow" table gives it: estimates until a GPU has run the pack.
MEMORY = "Memory: {weights} of weights on the GPU; training needs {train}, an estimate not yet measured on a GPU."
NOTE_MODELS = ("QR-LoRA on {label}: step 1 — models\n\n{files}\n\n(ComfyUI offers the downloads when the file is "
               "missing.) " + MEMORY + "\n\nDecompose splits each target weight into W = QR + W_comp once per "
               "model; the basis is cached in models/qr_lora/bases, so the next run starts in seconds.")
NOTE_MODELS_FP8 = ("QR-LoRA on {label}{needs}: step 1 — models\n\n{files}\n\n(ComfyUI offers the downloads "
                   "when a file is missing.) " + MEMORY + "\n\nDecompose reads the fp8 "
                   "weights as stored and splits each target weight into W = QR + W_comp once per model; the basis is "
                   "cached in models/qr_lora/bases.")


@dataclass(frozen=True)
class Loader:
    """One loader node: its type, widget values, offset below the first loader and title."""
    type: str
    values: dict
    dy: int = 0
    title: str | None = None


@dataclass(frozen=True)
class Family:
    """A model family's workflows: what differs between SDXL, SD3.5, FLUX.1, FLUX.2 and Qwen-Image is data here.

    loaders: their MODEL, CLIP and VAE outputs are found by type; `guidance`: a FLUX-style model (FluxGuidance
    on the prompts, a zeroed negative), the value it samples with; `shift`: ModelSamplingAuraFlow before
    sampling; `requires`: the oldest ComfyUI with the family's nodes and options."""
    label: str
    stem: str  # its workflows are qr_lora_<stem>_train_merge / _use_trained
    loaders: tuple[Loader, ...]
    vram: tuple[str, str]  # (the diffusion model's weights on the GPU, training): the README's table, estimates
    latent: str
    size: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    guidance: float | None = None
    shift: float | None = None
    requires: str | None = None
    note: str = NOTE_MODELS
    note_height: int = 300


def checkpoint(label: str, ckpt: str) -> tuple[Loader, ...]:
    return (Loader("CheckpointLoaderSimple", {"ckpt_name": ckpt}, title=f"Load {label} checkpoint"),)


def flux1(weight_dtype: str, t5: str, title: str) -> tuple[Loader, ...]:
    """FLUX.1-dev: the diffusion model, CLIP-L + T5 (DualCLIPLoader type flux) and the ae VAE."""
    return (Loader("UNETLoader", {"unet_name": "flux1-dev.safetensors", "weight_dtype": weight_dtype}, title=title),
            Loader("DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": t5, "type": "flux",
                                      "device": "default"}, 150),
            Loader("VAELoader", {"vae_name": "ae.safetensors"}, 340))


def one_encoder(label: str, unet: str, text_encoder: str, clip_type: str, vae: str) -> tuple[Loader, ...]:
    """The 2025 models: one diffusion model (fp8 file, weights as stored), one LLM text encoder (CLIPLoader of
    the model's type), one VAE."""
    return (Loader("UNETLoader", {"unet_name": unet, "weight_dtype": "default"}, title=f"Load {label}"),
            Loader("CLIPLoader", {"clip_name": text_encoder, "type": clip_type, "device": "default"}, 150),
            Loader("VAELoader", {"vae_name": vae}, 320))


# FLUX.2 and Qwen-Image generate as ComfyUI's example workflows for them do (FLUX.2: guidance 4; Qwen-Image:
# AuraFlow shift 3.1, cfg 2.5). FLUX.2 needs ComfyUI 0.8 (CLIPLoader type flux2, EmptyFlux2LatentImage);
# Qwen-Image's nodes are in 0.3.64 already, where its workflow validates.
FAMILIES = {
    "sdxl": Family("SDXL", "sdxl", checkpoint("SDXL", "sd_xl_base_1.0.safetensors"),
                   vram=("5.1 GB", "8–10 GB"),
                   latent="EmptyLatentImage", size=1024, steps=30, cfg=7.0, sampler="euler", scheduler="normal"),
    "sd35": Family("SD3.5 Large", "sd35", checkpoint("SD3.5 Large", "sd3.5_large_fp8_scaled.safetensors"),
                   vram=("8.1 GB", "12–16 GB"),
                   latent="EmptySD3LatentImage", size=1024, steps=30, cfg=4.0, sampler="euler",
                   scheduler="sgm_uniform"),
    "flux": Family("FLUX.1-dev", "flux_dev", flux1("default", "t5xxl_fp16.safetensors", "Load FLUX.1-dev"),
                   vram=("23.8 GB", "28–34 GB (the fp8 variant: 16–20 GB)"),
                   latent="EmptySD3LatentImage", size=1024, steps=28, cfg=1.0, sampler="euler", scheduler="simple",
                   guidance=SAMPLE_GUIDANCE),
    "flux_fp8": Family("FLUX.1-dev fp8 (24 GB)", "flux_dev_fp8_24gb",
                       flux1("fp8_e4m3fn", "t5xxl_fp8_e4m3fn_scaled.safetensors", "Load FLUX.1-dev (fp8 weights)"),
                       vram=("11.9 GB", "16–20 GB (made for 24 GB cards)"),
                       latent="EmptySD3LatentImage", size=1024, steps=28, cfg=1.0, sampler="euler",
                       scheduler="simple", guidance=SAMPLE_GUIDANCE),
    "flux2": Family("FLUX.2-dev", "flux2_dev",
                    one_encoder("FLUX.2-dev", "flux2_dev_fp8mixed.safetensors", "mistral_3_small_flux2_fp8.safetensors",
                                "flux2", "flux2-vae.safetensors"),
                    vram=("≈ 35 GB", "40–48 GB"),
                    latent="EmptyFlux2LatentImage", size=1024, steps=20, cfg=1.0, sampler="euler", scheduler="simple",
                    guidance=4.0, requires="0.8.0",
                    note=NOTE_MODELS_FP8, note_height=320),
    "qwen_image": Family("Qwen-Image", "qwen_image",
                         one_encoder("Qwen-Image", "qwen_image_fp8_e4m3fn.safetensors",
                                     "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image",
                                     "qwen_image_vae.safetensors"),
                         vram=("20.4 GB", "26–32 GB"),
                         latent="EmptySD3LatentImage", size=1328, steps=20, cfg=2.5, sampler="euler",
                         scheduler="simple", shift=3.1,
                         note=NOTE_MODELS_FP8, note_height=320),
}


def loaders(wf: Workflow, family: str, x: float, y: float):
    """The family's loader nodes; returns (model_src, clip_src, vae_src, nodes), sources as (node, slot) pairs."""
    nodes = [wf.node(ld.type, (x, y + ld.dy), ld.values, title=ld.title) for ld in FAMILIES[family].loaders]

    def source(kind: str):
        return next((n, i) for n in nodes for i, o in enumerate(n["outputs"]) if o["type"] == kind)

    return source("MODEL"), source("CLIP"), source("VAE"), nodes


def nodes_missing(info: dict, family: str) -> list[str]:
    """Nodes and text-encoder types the family's workflow needs that this /object_info lacks (an older ComfyUI)."""
    f = FAMILIES[family]
    needed = [ld.type for ld in f.loaders] + [f.latent] + (["ModelSamplingAuraFlow"] if f.shift is not None else [])
    missing = [n for n in dict.fromkeys(needed) if n not in info]
    for ld in f.loaders:
        clip_type = ld.values.get("type")
        if clip_type and ld.type in info and clip_type not in input_spec(info[ld.type], "type")[1].get("options", []):
            missing.append(f"{ld.type} type {clip_type}")
    return missing


def note_models(family: str) -> str:
    f = FAMILIES[family]
    files = [v for ld in f.loaders for v in ld.values.values() if v in MODELS]
    lines = "\n".join(f"- {name} → models/{MODELS[name][1]}/" for name in files)
    needs = f" (ComfyUI ≥ {f.requires.removesuffix('.0')})" if f.requires else ""
    return f.note.format(label=f.label, files=lines, weights=f.vram[0], train=f.vram[1], needs=needs)


@dataclass
class Prompt:
    cond: tuple  # (node, slot) of the conditioning to sample or train with
    encoder: dict  # the CLIPTextEncode node
    nodes: list


def prompt(wf: Workflow, family: str, clip, text: str, pos, title: str, color: str | None = None,
           guidance: float | None = None) -> Prompt:
    """CLIPTextEncode (+ FluxGuidance for a FLUX-style family, `guidance` or the family's own)."""
    enc = wf.node("CLIPTextEncode", pos, {"text": text}, title=title, color=color, size=[340, 130])
    wf.link(clip[0], clip[1], enc, "clip")
    f = FAMILIES[family]
    if f.guidance is None:
        return Prompt((enc, 0), enc, [enc])
    guidance = f.guidance if guidance is None else guidance
    label = "FluxGuidance (training: 1, as the official code)" if guidance == TRAIN_GUIDANCE else None
    g = wf.node("FluxGuidance", (pos[0], pos[1] + 160), {"guidance": guidance}, title=label)
    wf.link(enc, 0, g, "conditioning")
    return Prompt((g, 0), enc, [enc, g])


def train_branch(wf: Workflow, family: str, kind: str, model, basis, clip, vae, x: float, y: float,
                 image: str, text: str, trigger: str, save: str, name: str | None = None):
    """LoadImage → ImageScale (512) → VAEEncode → Train ΔR with the prompt; returns the Train node and all nodes.

    kind: content or style (the colour); name: what the titles call the ΔR (default: the kind)."""
    name = name or kind
    color = "#335" if kind == "content" else "#535"
    img = wf.node("LoadImage", (x, y), {"image": image}, title=f"{name.capitalize()} image (upload yours)")
    scale = wf.node("ImageScale", (x, y + 380), {"upscale_method": "lanczos", "width": TRAIN_PX, "height": TRAIN_PX,
                                                 "crop": "center"}, title=f"Resize to {TRAIN_PX} px")
    enc = wf.node("VAEEncode", (x, y + 560))
    wf.link(img, 0, scale, "image")
    wf.link(scale, 0, enc, "pixels")
    wf.link(vae[0], vae[1], enc, "vae")
    p = prompt(wf, family, clip, text, (x + 380, y), f"{name.capitalize()} prompt", color, TRAIN_GUIDANCE)
    settings = dict(TRAIN, trigger_words=trigger, save_name=save)
    train = wf.node("QRLoRATrainDelta", (x + 760, y), settings, title=f"Train {name} ΔR")
    wf.link(model[0], model[1], train, "model")
    wf.link(basis[0], basis[1], train, "basis")
    wf.link(enc, 0, train, "latent")
    wf.link(p.cond[0], p.cond[1], train, "positive")
    return train, [img, scale, enc, train] + p.nodes


def sampler_chain(wf: Workflow, family: str, model, clip, vae, x: float, y: float, text: str, prefix: str,
                  hooks=None):
    """Prompt → KSampler (on `model`, the family's settings) → VAEDecode → SaveImage; returns the nodes.

    `hooks`: a HOOKS output set on both conditionings (core Cond Pair Set Props) before the sampler."""
    f = FAMILIES[family]
    p = prompt(wf, family, clip, text, (x, y), "Merged prompt", "#232")
    pos = p.cond
    nodes_ = list(p.nodes)
    if f.guidance is not None:
        neg = wf.node("ConditioningZeroOut", (x, y + 280), title="Negative (FLUX: none)")
        wf.link(p.encoder, 0, neg, "conditioning")
    else:
        neg = wf.node("CLIPTextEncode", (x, y + 170), {"text": "blurry, low quality"}, title="Negative prompt",
                      color="#322", size=[340, 110])
        wf.link(clip[0], clip[1], neg, "clip")
    negative = (neg, 0)
    nodes_.append(neg)
    if hooks is not None:
        props = wf.node("PairConditioningSetProperties", (x, y + 560), {"strength": 1.0, "set_cond_area": "default"},
                        title="Cond Pair Set Props (hooks on both)")
        wf.link(pos[0], pos[1], props, "positive_NEW")
        wf.link(negative[0], negative[1], props, "negative_NEW")
        wf.link(hooks[0], hooks[1], props, "hooks")
        pos, negative = (props, 0), (props, 1)
        nodes_.append(props)
    lat = wf.node(f.latent, (x, y + 400), {"width": f.size, "height": f.size, "batch_size": 1})
    ks = wf.node("KSampler", (x + 380, y), {"seed": 42, "seed:control": "fixed", "steps": f.steps, "cfg": f.cfg,
                                            "sampler_name": f.sampler, "scheduler": f.scheduler, "denoise": 1.0})
    wf.link(model[0], model[1], ks, "model")
    wf.link(pos[0], pos[1], ks, "positive")
    wf.link(negative[0], negative[1], ks, "negative")
    wf.link(lat, 0, ks, "latent_image")
    dec = wf.node("VAEDecode", (x + 380, y + 330))
    wf.link(ks, 0, dec, "samples")
    wf.link(vae[0], vae[1], dec, "vae")
    save = wf.node("SaveImage", (x + 760, y), {"filename_prefix": prefix}, size=[420, 480])
    wf.link(dec, 0, save, "images")
    return nodes_ + [lat, ks, dec, save]


def decompose(wf: Workflow, model, x, y):
    d = wf.node("QRLoRADecompose", (x, y), {"rank": 64, "preset": "paper", "custom_regex": "", "method": "fast",
                                          "use_cache": True}, title="QR-LoRA Decompose (cached)")
    wf.link(model[0], model[1], d, "model")
    return d


NOTE_TRAIN = ("Steps 2 and 3 — train two ΔR, one image each (paper settings: rank 64, lr 1e-4, 500 steps, {px} px).\n\n"
              "The pack's example images (content_dog.png, style_reference.png) are preselected; pick your content "
              "image (e.g. your dog) and a style reference in the Load Image nodes. The prompts carry the trigger "
              "words '<c>' and '<s>'; any rare word works if you use it again in the merged prompt.\n\n"
              "The ΔR files are written to models/qr_lora/ (save_name), every {every} steps and at the end. "
              "The node draws the loss curve while it trains.")
NOTE_MERGE = ("Step 4 — merge and generate: W' = W + Q(λc·ΔR_content + λs·ΔR_style).\n\n"
              "λc and λs (0…1, above 1 exaggerates) weigh content against style; no retraining needed.\n\n{reuse}")
# How to generate from the saved ΔR later. Not by muting the Train nodes: Merge then lacks its inputs.
NOTE_REUSE = ("To generate from the two ΔR later without training, open '{workflow}': its Load ΔR nodes pick the "
              "files this workflow saves ({files}), then merge and sample.")


def note_merge(family: str) -> str:
    """Step 4's note: the family's use-trained workflow (every family has one) and the files it loads."""
    files = f"{family}_content_dog.safetensors, {family}_style.safetensors"
    use = f"qr_lora_{FAMILIES[family].stem}_use_trained"
    return NOTE_MERGE.format(reuse=NOTE_REUSE.format(workflow=use, files=files))


def train_merge(info: dict, family: str) -> dict:
    """Train content and style ΔR, merge them and generate."""
    f = FAMILIES[family]
    wf = graph(info)
    model, clip, vae, lnodes = loaders(wf, family, 0, 0)
    d = decompose(wf, model, 0, 520)
    note1 = wf.node("Note", (0, 880), text=note_models(family), size=[340, f.note_height])
    wf.group("Step 1 · Models and decomposition", lnodes + [d, note1], GROUP_COLORS["models"])
    basis = (d, 0)
    base_model = (d, 1)
    tc, cnodes = train_branch(wf, family, "content", base_model, basis, clip, vae, 480, 0, "content_dog.png",
                              CONTENT_PROMPT, "<c> dog", f"{family}_content_dog")
    wf.group("Step 2 · Content ΔR: 'a photo of a <c> dog'", cnodes, GROUP_COLORS["content"])
    # Below the content branch, whose Train ΔR node is the tallest (938 px with its panel).
    ts, snodes = train_branch(wf, family, "style", base_model, basis, clip, vae, 480, 1060, "style_reference.png",
                              STYLE_PROMPT, "<s> style", f"{family}_style")
    wf.group("Step 3 · Style ΔR: 'a cat in <s> style'", snodes, GROUP_COLORS["style"])
    wf.node("Note", (1680, 0), text=NOTE_TRAIN.format(px=TRAIN_PX, every=TRAIN["save_every"]), size=[340, 280])
    merge = wf.node("QRLoRAMergeDeltas", (1680, 820), {"lambda_content": 1.0, "lambda_style": 1.0,
                                                       "lambda_extra_1": 1.0, "lambda_extra_2": 1.0,
                                                       "allow_mixed_bases": False}, title="Merge ΔR (λc, λs)")
    wf.link(base_model[0], base_model[1], merge, "model")
    wf.link(tc, 0, merge, "content")
    wf.link(ts, 0, merge, "style")
    note3 = wf.node("Note", (1680, 1240), text=note_merge(family), size=[340, 280])
    sampled, extra = family_sampling(wf, family, (merge, 0), 1680, 1540)
    gen = sampler_chain(wf, family, sampled, clip, vae, 2080, 820, MERGE_PROMPT, f"qr_lora/{family}_merge")
    wf.group("Step 4 · Merge (λc, λs) and generate: 'a <c> dog in <s> style'", [merge, note3] + extra + gen,
             GROUP_COLORS["merge"])
    return with_requirement(wf.to_json(f"train_merge_{family}"), family)


def family_sampling(wf: Workflow, family: str, model, x: float, y: float):
    """The model the family samples: through ModelSamplingAuraFlow where it has a shift (Qwen-Image);
    returns (source, the nodes added)."""
    f = FAMILIES[family]
    if f.shift is None:
        return model, []
    shift = wf.node("ModelSamplingAuraFlow", (x, y), {"shift": f.shift})
    wf.link(model[0], model[1], shift, "model")
    return (shift, 0), [shift]


def with_requirement(out: dict, family: str) -> dict:
    """The family's oldest ComfyUI in the workflow's extra, where it needs a newer one than CI's oldest."""
    if FAMILIES[family].requires:
        out["extra"][REQUIRES_KEY] = FAMILIES[family].requires
    return out


def load_trained_pair(wf, model, y: int, content_title: str, style_title: str):
    """Load ΔR nodes for the content and style ΔR that the SDXL train-and-merge workflow saves."""
    lc = wf.node("QRLoRALoadDelta", (0, y), {"delta_file": "sdxl_content_dog.safetensors"}, title=content_title)
    ls = wf.node("QRLoRALoadDelta", (0, y + 200), {"delta_file": "sdxl_style.safetensors"}, title=style_title)
    for n in (lc, ls):
        wf.link(model[0], model[1], n, "model")
    return lc, ls


def lambda_grid(info: dict) -> dict:
    wf = graph(info)
    model, clip, vae, lnodes = loaders(wf, "sdxl", 0, 0)
    lc, ls = load_trained_pair(wf, model, 200, "Content ΔR", "Style ΔR")
    note = wf.node("Note", (0, 620), size=[340, 330], text=(
        "λ grid (paper Fig. 7/17): one seed and prompt, rows λc (content), columns λs (style).\n\n"
        "1. Train the two ΔR with 'qr_lora_sdxl_train_merge' (they land in models/qr_lora/).\n"
        "2. Pick them in the two Load ΔR nodes (hover shows architecture, rank and trigger words).\n"
        "3. Queue. 'start:stop:step' also works, e.g. 0.5:1.0:0.1 gives the paper's 6×6 grid (36 images)."))
    wf.group("Step 1 · Model and the two ΔR", lnodes + [lc, ls, note], GROUP_COLORS["models"])
    pos = wf.node("CLIPTextEncode", (420, 0), {"text": MERGE_PROMPT}, title="Merged prompt", color="#232", size=[340, 130])
    neg = wf.node("CLIPTextEncode", (420, 170), {"text": "blurry, low quality"}, title="Negative prompt", color="#322",
                  size=[340, 110])
    for n in (pos, neg):
        wf.link(clip[0], clip[1], n, "clip")
    lat = wf.node("EmptyLatentImage", (420, 320), {"width": 1024, "height": 1024, "batch_size": 1})
    grid = wf.node("QRLoRALambdaGrid", (800, 0), {"lambda_content_values": "0.5, 0.75, 1.0",
                                                  "lambda_style_values": "0.5, 0.75, 1.0", "seed": 42,
                                                  "seed:control": "fixed", "steps": 30, "cfg": 7.0,
                                                  "sampler_name": "euler", "scheduler": "normal"},
                   title="QR-LoRA λ Grid", size=[360, 460])
    wf.link(model[0], model[1], grid, "model")
    wf.link(lc, 0, grid, "content")
    wf.link(ls, 0, grid, "style")
    wf.link(pos, 0, grid, "positive")
    wf.link(neg, 0, grid, "negative")
    wf.link(lat, 0, grid, "latent_image")
    wf.link(vae[0], vae[1], grid, "vae")
    save = wf.node("SaveImage", (1200, 0), {"filename_prefix": "qr_lora/sdxl_lambda_grid"}, size=[520, 560])
    wf.link(grid, 0, save, "images")
    wf.group("Step 2 · λc × λs grid", [pos, neg, lat, grid, save], GROUP_COLORS["merge"])
    return wf.to_json("lambda_grid")


def lambda_schedule(info: dict) -> dict:
    """Two trained ΔR as weight hooks whose λ follows a schedule over the sampling steps (content early, style late)."""
    wf = graph(info)
    model, clip, vae, lnodes = loaders(wf, "sdxl", 0, 0)
    lc, ls = load_trained_pair(wf, model, 200, "Content ΔR", "Style ΔR")
    note = wf.node("Note", (0, 620), size=[340, 360], text=(
        "λ over sampling steps: content and style ΔR become two ComfyUI weight hooks, each with its own "
        "keyframes, so λc and λs follow a schedule over the sampling progress.\n\n"
        "1. Train the two ΔR with 'qr_lora_sdxl_train_merge' and pick them in the Load ΔR nodes.\n"
        "2. Choose a preset, or 'custom' with points 'progress: content, style' (factors of λc and λs), "
        "e.g. '0: 1, 0; 0.3: 1, 1' = content alone for the first 30 % of the steps.\n"
        "3. The hooks go on both conditionings (Cond Pair Set Props); the sampler gets the plain model.\n\n"
        "Whether a schedule beats the plain merge is measured on the pack's world only (README, Figures)."))
    wf.group("Step 1 · Model and the two ΔR", lnodes + [lc, ls, note], GROUP_COLORS["models"])
    hooks = wf.node("QRLoRAScheduleHooks", (420, 0), {"lambda_content": 1.0, "lambda_style": 1.0,
                                                      "lambda_extra_1": 1.0, "lambda_extra_2": 1.0,
                                                      "schedule": "content-early-style-late"},
                    title="QR-LoRA λ over Steps (Hooks)")
    wf.link(model[0], model[1], hooks, "model")
    wf.link(lc, 0, hooks, "content")
    wf.link(ls, 0, hooks, "style")
    gen = sampler_chain(wf, "sdxl", model, clip, vae, 820, 0, MERGE_PROMPT, "qr_lora/sdxl_lambda_schedule",
                        hooks=(hooks, 0))
    wf.group("Step 2 · λ(t) hooks and generate: 'a <c> dog in <s> style'", [hooks] + gen, GROUP_COLORS["merge"])
    return wf.to_json("lambda_schedule")


def nway(info: dict) -> dict:
    wf = graph(info)
    model, clip, vae, lnodes = loaders(wf, "sdxl", 0, 0)
    d = decompose(wf, model, 0, 200)
    lc, ls = load_trained_pair(wf, model, 540, "Content ΔR (<c> dog)", "Style ΔR (<s> style)")
    note = wf.node("Note", (0, 960), size=[340, 300], text=(
        "N-way composition (paper Fig. 9): content + style + a third attribute, each its own ΔR in the same "
        "basis Q, added with its own λ.\n\n1. Train content and style with 'qr_lora_sdxl_train_merge'.\n"
        "2. This workflow trains the third ΔR (an accessory: 'a photo of a <a> hat') and merges all three.\n"
        "3. The merged prompt uses all three trigger words. Lower a λ if one attribute dominates."))
    wf.group("Step 1 · Model, basis and the two trained ΔR", lnodes + [d, lc, ls, note], GROUP_COLORS["models"])
    tx, xnodes = train_branch(wf, "sdxl", "content", (d, 1), (d, 0), clip, vae, 480, 0, "attribute_hat.png",
                              "a photo of a <a> hat", "<a> hat", "sdxl_attribute_hat", name="attribute")
    wf.group("Step 2 · Third attribute ΔR: 'a photo of a <a> hat'", xnodes, GROUP_COLORS["extra"])
    merge = wf.node("QRLoRAMergeDeltas", (480, 880), {"lambda_content": 1.0, "lambda_style": 0.9,
                                                      "lambda_extra_1": 0.8, "lambda_extra_2": 1.0,
                                                      "allow_mixed_bases": False}, title="Merge 3 ΔR (λc, λs, λ₁)")
    wf.link(d, 1, merge, "model")
    wf.link(lc, 0, merge, "content")
    wf.link(ls, 0, merge, "style")
    wf.link(tx, 0, merge, "extra_1")
    gen = sampler_chain(wf, "sdxl", (merge, 0), clip, vae, 880, 880, "a <c> dog wearing a <a> hat in <s> style",
                        "qr_lora/sdxl_nway")
    wf.group("Step 3 · Merge content + style + attribute and generate", [merge] + gen, GROUP_COLORS["merge"])
    return wf.to_json("nway")


def use_trained(info: dict, family: str) -> dict:
    """Load the two ΔR a train-and-merge workflow saved → Merge (λc, λs) → sample: generating needs no retraining."""
    wf = graph(info)
    trainer_workflow = f"qr_lora_{FAMILIES[family].stem}_train_merge"
    model, clip, vae, lnodes = loaders(wf, family, 0, 0)
    y = 520
    lc = wf.node("QRLoRALoadDelta", (0, y), {"delta_file": f"{family}_content_dog.safetensors"},
                 title="Content ΔR (<c> dog)")
    ls = wf.node("QRLoRALoadDelta", (0, y + 200), {"delta_file": f"{family}_style.safetensors"},
                 title="Style ΔR (<s> style)")
    for n in (lc, ls):
        wf.link(model[0], model[1], n, "model")
    note = wf.node("Note", (0, y + 420), size=[340, 330], text=(
        f"Use two trained ΔR on {FAMILIES[family].label}: no training, no Decompose.\n\n"
        f"1. Train them once with '{trainer_workflow}' (they land in "
        "models/qr_lora/), or pick any ΔR pair trained on this model.\n"
        "2. Load ΔR shows each file's architecture, rank and trigger words; it refuses a file made for another "
        "model.\n3. Move λc and λs and queue again: only the merge and the sampling run (a few seconds on a GPU). "
        "Each ΔR file carries its own Q, so the merge needs no basis."))
    wf.group("Step 1 · Model and the two trained ΔR", lnodes + [lc, ls, note], GROUP_COLORS["models"])
    merge = wf.node("QRLoRAMergeDeltas", (480, 0), {"lambda_content": 1.0, "lambda_style": 1.0,
                                                    "lambda_extra_1": 1.0, "lambda_extra_2": 1.0,
                                                    "allow_mixed_bases": False}, title="Merge ΔR (λc, λs)")
    wf.link(model[0], model[1], merge, "model")
    wf.link(lc, 0, merge, "content")
    wf.link(ls, 0, merge, "style")
    sampled, extra = family_sampling(wf, family, (merge, 0), 480, 560)  # below Merge (502 px tall)
    gen = sampler_chain(wf, family, sampled, clip, vae, 880, 0, MERGE_PROMPT, f"qr_lora/{family}_use_trained")
    wf.group("Step 2 · Merge (λc, λs) and generate: 'a <c> dog in <s> style'", [merge] + extra + gen,
             GROUP_COLORS["merge"])
    return with_requirement(wf.to_json(f"use_trained_{family}"), family)


# The dataset workflows use ComfyUI's dataset nodes (comfy_extras/nodes_dataset.py), which arrived after 0.3.64.
# Make Training Dataset's `texts` was a widget in 0.8 and is an input without one in 0.33, so each version gets
# its own file, built from that version's /object_info: (the oldest ComfyUI it is for, the first it is not).
DATASET_FOLDER = "qr_lora_dataset"
DATASET_WORKFLOWS = {"qr_lora_sdxl_dataset_train": ("0.8.0", "0.33.0"),
                     "qr_lora_sdxl_dataset_train_comfyui_0_33": ("0.33.0", None)}
REQUIRES_KEY = "qr_lora_requires_comfyui"  # in a workflow's "extra": the oldest ComfyUI that has all its nodes
BELOW_KEY = "qr_lora_requires_comfyui_below"  # in "extra": the first ComfyUI it does not fit (another file does)


def dataset_versions_text(name: str) -> str:
    """Which ComfyUI this dataset workflow is for, and which file serves the others."""
    since, below = DATASET_WORKFLOWS[name]
    def versions(a: str, b: str | None) -> str:
        return f"ComfyUI ≥ {a}" + (f" and < {b}" if b else "")

    others = [f"{other} for {versions(*span)}" for other, span in DATASET_WORKFLOWS.items() if other != name]
    return f"{versions(since, below)}; use {', '.join(others)}"


def dataset_train(info: dict, name: str) -> dict:
    """Several captioned images (a folder in ComfyUI/input) → ComfyUI's dataset nodes → one Train ΔR run → a sample."""
    since, below = DATASET_WORKFLOWS[name]
    wf = graph(info)
    model, clip, vae, lnodes = loaders(wf, "sdxl", 0, 0)
    d = decompose(wf, model, 0, 200)
    # Where Save/Load Training Dataset keep the encoded list: 0.33 added a datasets folder that Load lists.
    load_folder = input_spec(info["LoadTrainingDataset"], "folder_name")[0] if "LoadTrainingDataset" in info else None
    kept = ("Save Training Dataset writes the encoded list to ComfyUI/datasets/<folder>; Load Training Dataset "
            "offers those folders for the next run." if load_folder == "COMBO" else
            "Save Training Dataset writes the encoded list to ComfyUI/output/<folder>; Load Training Dataset reads "
            "it back for the next run.")
    note1 = wf.node("Note", (0, 560), size=[340, 460], text=(
        f"Train one ΔR on several images with captions. This file is for {dataset_versions_text(name)} "
        "(Make Training Dataset's inputs differ).\n\n"
        f"1. Put the images into ComfyUI/input/{DATASET_FOLDER}/ (any sizes), each with a caption file of the "
        "same name (dog1.png + dog1.txt: 'a photo of a <c> dog on the grass'). The trigger word '<c>' ties the "
        "captions together.\n"
        "2. Resize keeps each image's aspect ratio (shorter edge 512 px, the paper's size); Make Training "
        "Dataset encodes every image with the VAE and every caption with CLIP: one latent and one conditioning "
        "per image.\n"
        "3. Train ΔR trains once on the whole list; each image is trained with its own caption, images of the "
        "same size are batched together.\n\n" + kept))
    wf.group("Step 1 · Model and decomposition", lnodes + [d, note1], GROUP_COLORS["models"])
    load = wf.node("LoadImageTextDataSetFromFolder", (480, 0), {"folder": DATASET_FOLDER},
                   title=f"Images + captions (input/{DATASET_FOLDER})")
    resize = wf.node("ResizeImagesByShorterEdge", (480, 160), {"shorter_edge": TRAIN_PX},
                     title=f"Shorter edge {TRAIN_PX} px")
    make = wf.node("MakeTrainingDataset", (480, 320))
    wf.link(load, "images", resize, "images")
    wf.link(resize, 0, make, "images")
    link_to_widget(wf, load, "texts", make, "texts")
    wf.link(vae[0], vae[1], make, "vae")
    wf.link(clip[0], clip[1], make, "clip")
    train = wf.node("QRLoRATrainDelta", (860, 0), dict(TRAIN, trigger_words="<c> dog", save_name="sdxl_dataset_dog"),
                    title="Train ΔR on the dataset")
    wf.link(d, 1, train, "model")
    wf.link(d, 0, train, "basis")
    wf.link(make, "latents", train, "latent")
    wf.link(make, "conditioning", train, "positive")
    wf.group("Step 2 · Dataset → one ΔR", [load, resize, make, train], GROUP_COLORS["content"])
    gen = sampler_chain(wf, "sdxl", (train, 1), clip, vae, 1280, 0, "a photo of a <c> dog on the beach",
                        "qr_lora/sdxl_dataset")
    wf.group("Step 3 · Try it: the model with the trained ΔR", gen, GROUP_COLORS["merge"])
    out = wf.to_json(name.removeprefix("qr_lora_sdxl_"))
    out["extra"][REQUIRES_KEY] = since
    if below:
        out["extra"][BELOW_KEY] = below
    return out


@dataclass(frozen=True)
class Recipe:
    """A workflow's builder; `family`: its model family (the file is for the family's ComfyUI, whose
    /object_info must have its nodes); since/below: the ComfyUI versions it is for, where they are its own."""
    build: Callable[[dict], dict]
    family: str | None = None
    since: str | None = None
    below: str | None = None


def family_recipe(build: Callable[[dict, str], dict], family: str) -> Recipe:
    return Recipe(lambda info: build(info, family), family)


WORKFLOWS = {
    **{f"qr_lora_{FAMILIES[f].stem}_train_merge": family_recipe(train_merge, f) for f in ("sdxl", "sd35", "flux", "flux_fp8")},
    "qr_lora_sdxl_lambda_grid": Recipe(lambda_grid),
    "qr_lora_sdxl_nway_composition": Recipe(nway),
    "qr_lora_sdxl_lambda_schedule": Recipe(lambda_schedule),
    **{f"qr_lora_{FAMILIES[f].stem}_train_merge": family_recipe(train_merge, f) for f in ("flux2", "qwen_image")},
    **{f"qr_lora_{FAMILIES[f].stem}_use_trained": family_recipe(use_trained, f)
       for f in ("sdxl", "sd35", "flux", "flux_fp8", "flux2", "qwen_image")},
    **{name: Recipe(lambda info, name=name: dataset_train(info, name), None, *span)
       for name, span in DATASET_WORKFLOWS.items()},
}


# --------------------------------------------------------------------------- subgraph blueprints (ComfyUI ≥ 0.8)
# ComfyUI ≥ 0.8 lists custom_nodes/<pack>/subgraphs/*.json at GET /global_subgraphs (app/subgraph_manager.py);
# the front end offers each under "Subgraph Blueprints", named after its file (see BLUEPRINTS).
SUBGRAPHS_OUT = ROOT / "subgraphs"


def train_blueprint(info: dict) -> dict:
    """Image → resize → VAE Encode → Train ΔR with a given prompt: one ΔR from one image, as one node."""
    wf = graph(info)
    scale = wf.node("ImageScale", (0, 0), {"upscale_method": "lanczos", "width": TRAIN_PX, "height": TRAIN_PX,
                                          "crop": "center"}, title=f"Resize to {TRAIN_PX} px")
    enc = wf.node("VAEEncode", (0, 200))
    train = wf.node("QRLoRATrainDelta", (380, 0), dict(TRAIN, trigger_words="<c> dog", save_name="qr_lora_delta"),
                    title="Train ΔR")
    wf.link(scale, 0, enc, "pixels")
    wf.link(enc, 0, train, "latent")
    return blueprint(
        "QR-LoRA Train ΔR from an image",
        "QR-LoRA: train one ΔR (content or style) from one image and its prompt: the image is resized to "
        f"{TRAIN_PX} px and VAE-encoded, Train ΔR runs with the paper's settings (rank from Decompose, lr 1e-4, "
        "500 steps). FLUX: pass the prompt through FluxGuidance 1.",
        wf,
        inputs=[("model", "MODEL", [(train, "model")]), ("basis", "QR_BASIS", [(train, "basis")]),
                ("image", "IMAGE", [(scale, "image")]), ("vae", "VAE", [(enc, "vae")]),
                ("positive", "CONDITIONING", [(train, "positive")])],
        outputs=[("QR_DELTA", "QR_DELTA", train, 0), ("MODEL", "MODEL", train, 1), ("loss", "LOSS_MAP", train, 2)],
        promoted=[(train, "steps"), (train, "learning_rate"), (train, "trigger_words"), (train, "save_name")])


def merge_blueprint(info: dict) -> dict:
    """Two ΔR files → Merge (λc, λs) → the model to sample: generating from trained ΔR, as one node."""
    wf = graph(info)
    lc = wf.node("QRLoRALoadDelta", (0, 0), {"delta_file": "sdxl_content_dog.safetensors"}, title="Content ΔR")
    ls = wf.node("QRLoRALoadDelta", (0, 200), {"delta_file": "sdxl_style.safetensors"}, title="Style ΔR")
    merge = wf.node("QRLoRAMergeDeltas", (380, 0), {"lambda_content": 1.0, "lambda_style": 1.0,
                                                    "lambda_extra_1": 1.0, "lambda_extra_2": 1.0,
                                                    "allow_mixed_bases": False}, title="Merge ΔR (λc, λs)")
    wf.link(lc, 0, merge, "content")
    wf.link(ls, 0, merge, "style")
    return blueprint(
        "QR-LoRA Merge two ΔR files",
        "QR-LoRA: load a content and a style ΔR from models/qr_lora and merge them onto the model with λc and "
        "λs (W + Q(λc ΔRc + λs ΔRs)); connect the MODEL to a sampler. No training, no Decompose.",
        wf,
        inputs=[("model", "MODEL", [(merge, "model"), (lc, "model"), (ls, "model")])],
        outputs=[("MODEL", "MODEL", merge, 0)],
        promoted=[(lc, "delta_file", "content_delta"), (ls, "delta_file", "style_delta"), (merge, "lambda_content"),
                  (merge, "lambda_style")])


# File name (what the front end shows: it names the node and the blueprint after the file, whatever the JSON
# says) → builder. ASCII on purpose: `git ls-files` quotes other names, and comfy-cli's `comfy node pack`, which
# lists the package's files with it, then drops them from the Registry zip as "not found". Inside, the JSON
# keeps the "ΔR" name, shown when the file is opened as a workflow.
BLUEPRINTS = {"QR-LoRA Train DeltaR from an image": train_blueprint, "QR-LoRA Merge two DeltaR files": merge_blueprint}


def thumbnails(out: Path, docs: Path = ROOT / "docs", width: int = 640) -> int:
    """<name>.jpg beside each workflow (the template browser's thumbnail for custom-node workflows)."""
    from PIL import Image

    for wf in sorted(out.glob("*.json")):
        shot = docs / f"workflow_{wf.stem}.png"
        if not shot.is_file():
            print("no screenshot for", wf.name, "- run tests/live first")
            continue
        im = Image.open(shot).convert("RGB")
        w, h = im.size
        im = im.crop((int(w * 0.03), int(h * 0.05), w, h))  # drop the side bar and the tab strip
        im.thumbnail((width, width))
        im.save(wf.with_suffix(".jpg"), quality=85, optimize=True)
        print("wrote", wf.with_suffix(".jpg"))
    return 0


def load_object_info(source: str) -> dict:
    if source.startswith("http"):
        with urllib.request.urlopen(source, timeout=60) as r:
            return json.load(r)
    return json.loads(Path(source).read_text())


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


@dataclass
class Source:
    """One ComfyUI's /object_info and its version (None: a saved copy given without one)."""
    where: str
    version: str | None
    info: dict


def load_source(spec: str) -> Source:
    """`URL` (its server's /system_stats tells the version), or `[VERSION=]FILE` (a saved /object_info)."""
    version, sep, where = spec.partition("=") if not spec.startswith("http") else ("", "", spec)
    if not sep:
        version, where = "", spec
    if not version and where.startswith("http"):
        stats = where.rsplit("/object_info", 1)[0] + "/system_stats"
        with urllib.request.urlopen(stats, timeout=60) as r:
            version = json.load(r)["system"]["comfyui_version"]
    return Source(where, version or None, load_object_info(where))


def merged_object_info(sources: list[Source]) -> dict:
    """The first source's nodes, plus nodes only later sources have (e.g. 0.3.64's, then 0.8's dataset nodes).

    The oldest ComfyUI goes first, so that every workflow whose nodes it has is written exactly as it
    validates there; a workflow that needs a newer node says so in extra.qr_lora_requires_comfyui.
    """
    merged: dict = {}
    for source in sources:
        for name, spec in source.info.items():
            merged.setdefault(name, spec)
    return merged


def version_range(name: str) -> tuple[str | None, str | None]:
    """(the oldest ComfyUI, the first newer one it does not fit) a workflow is written for; None: unbounded."""
    recipe = WORKFLOWS[name]
    if recipe.family is not None:
        return FAMILIES[recipe.family].requires, None
    return recipe.since, recipe.below


def oldest_in_range(sources: list[Source], since: str | None, below: str | None) -> Source | None:
    """The oldest given ComfyUI within [since, below): a bounded workflow is written as it validates there."""
    fits = [s for s in sources if s.version is not None
            and (since is None or version_tuple(s.version) >= version_tuple(since))
            and (below is None or version_tuple(s.version) < version_tuple(below))]
    return min(fits, key=lambda s: version_tuple(s.version), default=None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--object-info", nargs="+", metavar="[VERSION=]SOURCE",
                   help="URL of a server's /object_info (its version is asked from the server) or a saved copy "
                        "(VERSION=object_info.json); several, oldest ComfyUI first, to add the nodes only newer "
                        "versions have and to write each version's own files")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--only", nargs="+", metavar="NAME", help="write only these workflows (names without .json)")
    p.add_argument("--thumbnails-only", action="store_true",
                   help="only (re)make <name>.jpg beside each workflow from docs/workflow_<name>.png "
                        "(the screenshots tests/live/test_live_browser.py takes)")
    args = p.parse_args(argv)
    if args.thumbnails_only:
        return thumbnails(Path(args.out))
    if not args.object_info:
        p.error("--object-info is required to build the workflows")
    sources = [load_source(spec) for spec in args.object_info]
    if all(s.version for s in sources):
        sources.sort(key=lambda s: version_tuple(s.version))
    info = merged_object_info(sources)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, recipe in WORKFLOWS.items():
        if args.only and name not in args.only:
            continue
        since, below = version_range(name)
        source = info
        if since or below:
            chosen = oldest_in_range(sources, since, below)
            if chosen is None:
                print(f"skipped {name}: it is for ComfyUI ≥ {since}" + (f" and < {below}" if below else "")
                      + f", and no given /object_info is of such a version ({[s.version for s in sources]}; "
                        "a saved copy names its version as VERSION=FILE)")
                continue
            source = chosen.info
        if recipe.family and (missing := nodes_missing(source, recipe.family)):
            print(f"skipped {name}: needs a newer ComfyUI (this server lacks {', '.join(missing)})")
            continue
        (out / f"{name}.json").write_text(json.dumps(recipe.build(source), indent=2, ensure_ascii=False) + "\n")
        print("wrote", out / f"{name}.json")
    SUBGRAPHS_OUT.mkdir(exist_ok=True)
    for name, build in BLUEPRINTS.items():
        path = SUBGRAPHS_OUT / f"{name}.json"
        path.write_text(json.dumps(build(info), indent=2, ensure_ascii=False) + "\n")
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
