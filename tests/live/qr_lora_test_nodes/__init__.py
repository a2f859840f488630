"""Test-only ComfyUI nodes (never shipped): tiny random-weight models and stand-ins for text and VAE encoders.

tests/live puts this folder next to the pack in a temporary custom_nodes
directory, so that the pack's workflows can run through POST /prompt on the
CPU in seconds: the workflow's loaders, CLIPTextEncode and VAE nodes are
swapped for these, every QR-LoRA node and every other core node runs as is.
"""

from __future__ import annotations

import hashlib

import torch

import comfy.model_patcher
import comfy.sd
import comfy.supported_models
from comfy_api.latest import ComfyExtension, io

CPU = torch.device("cpu")
CONTEXT_DIM = 32
_UNET = dict(use_linear_in_transformer=True, use_temporal_attention=False, use_temporal_resblock=False,
             in_channels=4, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
             transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, num_head_channels=16, num_heads=-1,
             use_spatial_transformer=True, image_size=32, legacy=False, context_dim=CONTEXT_DIM, model_channels=32,
             adm_in_channels=2816 - 1280 + CONTEXT_DIM, num_classes="sequential")
# The same tiny shapes as tests/comfyui/comfy_env.py (that module sets up an in-process runtime, so it is not imported here).
CONFIGS = {
    "sdxl": (comfy.supported_models.SDXL, _UNET, {"num_head_channels": 16, "num_heads": -1}),
    "sd3": (comfy.supported_models.SD3,
            dict(in_channels=16, pos_embed_scaling_factor=None, depth=2, patch_size=2, out_channels=16,
                 pos_embed_max_size=32, adm_in_channels=CONTEXT_DIM, context_embedder_config={
                     "target": "torch.nn.Linear", "params": {"in_features": CONTEXT_DIM, "out_features": 128}},
                 num_patches=1024, qk_norm=None, x_block_self_attn_layers=[]), {}),
    "flux": (comfy.supported_models.Flux,
             dict(image_model="flux", guidance_embed=True, in_channels=16, out_channels=16, vec_in_dim=CONTEXT_DIM,
                  context_in_dim=CONTEXT_DIM, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1,
                  depth_single_blocks=1, axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True), {}),
}
LATENT_CHANNELS = {"sdxl": 4, "sd3": 16, "flux": 16}
_cache: dict = {}


def tiny_model(arch: str, seed: int):
    """A ModelPatcher around a tiny random-weight model built from ComfyUI's own class for `arch`."""
    cls, unet_config, overrides = CONFIGS[arch]
    config = cls(dict(unet_config))
    config.unet_config.update(overrides)
    config.set_inference_dtype(torch.float32, None)
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        model = config.get_model({}, device=CPU)
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim >= 2:
                value = torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5
            elif name.endswith("weight") or p.ndim == 0:
                value = torch.ones(p.shape)
            else:
                value = torch.zeros(p.shape)
            p.copy_(value)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


def pixel_vae(arch: str):
    """ComfyUI's own pixel-space VAE (decoding is the identity), tagged with the tiny model's latent channels."""
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    vae.qr_test_latent_channels = LATENT_CHANNELS[arch]
    return vae


ARCH_INPUT = io.Combo.Input("arch", options=list(CONFIGS), default="sdxl")


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
