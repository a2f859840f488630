"""Test-only ComfyUI nodes (never shipped): tiny random-weight models and stand-ins for text and VAE encoders.

tests/live puts this folder next to the pack in a temporary custom_nodes
directory, so that the pack's workflows can run through POST /prompt on the
CPU in seconds: the workflow's loaders, CLIPTextEncode and VAE nodes are
swapped for these, every QR-LoRA node and every other core node runs as is.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch

import comfy.sd
from comfy_api.latest import ComfyExtension, io

CPU = torch.device("cpu")
CONTEXT_DIM = 32  # the tiny models' text width
ARCHS = ("sdxl", "sd3", "flux")
LATENT_CHANNELS = {"sdxl": 4, "sd3": 16, "flux": 16}
_cache: dict = {}


def _load_models_module():
    """bench/comfy_models.py, the one builder of random-weight ComfyUI models (also used by tests/comfyui)."""
    pack_dir = Path(__file__).resolve().parents[3]  # custom_nodes holds a symlink to tests/live/qr_lora_test_nodes
    spec = importlib.util.spec_from_file_location("qr_lora_comfy_models", pack_dir / "bench" / "comfy_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


comfy_models = _load_models_module()


def tiny_model(arch: str, seed: int):
    """A ModelPatcher around a tiny random-weight model built from ComfyUI's own class for `arch`."""
    return comfy_models.random_model(comfy_models.model_config(arch, "tiny"), CPU, seed)


def pixel_vae(arch: str):
    """ComfyUI's own pixel-space VAE (decoding is the identity), tagged with the tiny model's latent channels."""
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    vae.qr_test_latent_channels = LATENT_CHANNELS[arch]
    return vae


ARCH_INPUT = io.Combo.Input("arch", options=list(ARCHS), default="sdxl")


class TinyCheckpoint(io.ComfyNode):
    """Stands in for CheckpointLoaderSimple / UNETLoader: a tiny model, a placeholder CLIP and VAE."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="QRTestTinyCheckpoint", category="_qr_lora_tests",
                         inputs=[ARCH_INPUT, io.Int.Input("seed", default=0, min=0, max=2**31)],
                         outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()])

    @classmethod
    def execute(cls, arch, seed) -> io.NodeOutput:
        if (arch, seed) not in _cache:  # one model per server, like a loaded checkpoint
            _cache[arch, seed] = tiny_model(arch, seed)
        return io.NodeOutput(_cache[arch, seed], {"test_clip": arch}, pixel_vae(arch))


class TinyClip(io.ComfyNode):
    """Stands in for DualCLIPLoader."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="QRTestTinyClip", category="_qr_lora_tests", inputs=[ARCH_INPUT],
                         outputs=[io.Clip.Output()])

    @classmethod
    def execute(cls, arch) -> io.NodeOutput:
        return io.NodeOutput({"test_clip": arch})


class TinyVAE(io.ComfyNode):
    """Stands in for VAELoader."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="QRTestTinyVAE", category="_qr_lora_tests", inputs=[ARCH_INPUT],
                         outputs=[io.Vae.Output()])

    @classmethod
    def execute(cls, arch) -> io.NodeOutput:
        return io.NodeOutput(pixel_vae(arch))


class TextEncode(io.ComfyNode):
    """Conditioning for the tiny models: a context and a pooled vector drawn from the text's hash."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="QRTestTextEncode", category="_qr_lora_tests",
                         inputs=[io.String.Input("text", multiline=True), io.Clip.Input("clip")],
                         outputs=[io.Conditioning.Output()])

    @classmethod
    def execute(cls, text, clip) -> io.NodeOutput:
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        g = torch.Generator().manual_seed(seed)
        context = torch.randn(1, 6, CONTEXT_DIM, generator=g)
        pooled = torch.randn(1, CONTEXT_DIM, generator=g)
        return io.NodeOutput([[context, {"pooled_output": pooled}]])


class VAEEncode(io.ComfyNode):
    """Pixels [B, H, W, 3] → a latent at 1/8 size with the model's channel count (average pooling; no weights)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="QRTestVAEEncode", category="_qr_lora_tests",
                         inputs=[io.Image.Input("pixels"), io.Vae.Input("vae")], outputs=[io.Latent.Output()])

    @classmethod
    def execute(cls, pixels, vae) -> io.NodeOutput:
        x = pixels[..., :3].movedim(-1, 1) * 2 - 1
        x = torch.nn.functional.avg_pool2d(x, 8)
        channels = vae.qr_test_latent_channels
        x = torch.cat([x] * (channels // 3 + 1), 1)[:, :channels]
        return io.NodeOutput({"samples": x.contiguous()})


class VAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="QRTestVAEDecode", category="_qr_lora_tests",
                         inputs=[io.Latent.Input("samples"), io.Vae.Input("vae")], outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, samples, vae) -> io.NodeOutput:
        x = samples["samples"][:, :3].float()
        x = torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest")
        return io.NodeOutput(torch.sigmoid(x).movedim(1, -1).contiguous())


class TestNodes(ComfyExtension):
    async def get_node_list(self):
        return [TinyCheckpoint, TinyClip, TinyVAE, TextEncode, VAEEncode, VAEDecode]


async def comfy_entrypoint() -> TestNodes:
    return TestNodes()
