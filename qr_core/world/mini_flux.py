"""A small text-to-image flow model in the FLUX layout (ComfyUI key names, fused qkv).

It exists so the whole QR-LoRA pipeline (fused-slice targets included) can be
run and measured without downloading a checkpoint: double-stream blocks with
`img_attn.qkv` / `txt_attn.qkv`, single-stream blocks whose `linear1` fuses
q, k, v and the MLP input, adaLN modulation and a final layer, as in
`comfy.ldm.flux`. Positions are a fixed sin-cos embedding instead of RoPE.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class MiniFluxConfig:
    in_channels: int = 4
    patch: int = 2
    hidden: int = 192
    heads: int = 4
    mlp_ratio: float = 4.0
    depth: int = 2  # double-stream blocks
    depth_single: int = 4
    context_dim: int = 64
    latent_size: int = 16  # spatial size the positional table covers
    vec_in_dim: int = 0  # > 0: FLUX's `vector_in`, fed the mean of the context (FLUX feeds CLIP's pooled vector)

    def to_json(self) -> dict:
        return asdict(self)


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    args = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def _sincos_2d(n: int, dim: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    quarter = dim // 4
    freqs = torch.exp(-math.log(10000) * torch.arange(quarter) / quarter)
    parts = [f(c.reshape(-1, 1).float() * freqs) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, -1)


class MLPEmbedder(nn.Module):
    def __init__(self, dim_in: int, hidden: int):
        super().__init__()
        self.in_layer = nn.Linear(dim_in, hidden)
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, x):
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))  # ComfyUI's FLUX names this weight `scale`

    def forward(self, x):
        return F.rms_norm(x, x.shape[-1:], self.scale, eps=1e-6)


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q, k):
        return self.query_norm(q), self.key_norm(k)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = QKNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)


class Modulation(nn.Module):
    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.lin = nn.Linear(dim, n * dim)

    def forward(self, vec):
        return self.lin(F.silu(vec))[:, None].chunk(self.n, -1)


def _attention(q, k, v, heads):
    q, k, v = (rearrange(t, "b l (h d) -> b h l d", h=heads) for t in (q, k, v))
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b h l d -> b l (h d)")


def _split_heads(qkv, heads, norm):
    q, k, v = qkv.chunk(3, -1)
    q, k = (rearrange(t, "b l (h d) -> b l h d", h=heads) for t in (q, k))
    q, k = norm(q, k)
    return q.flatten(2), k.flatten(2), v


class DoubleStreamBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        mlp = int(dim * mlp_ratio)
        for s in ("img", "txt"):
            setattr(self, f"{s}_mod", Modulation(dim, 6))
            setattr(self, f"{s}_norm1", nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_attn", SelfAttention(dim, heads))
            setattr(self, f"{s}_norm2", nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_mlp", nn.Sequential(nn.Linear(dim, mlp), nn.GELU(approximate="tanh"), nn.Linear(mlp, dim)))
        self.heads = heads

    def forward(self, img, txt, vec):
        streams = {"img": img, "txt": txt}
        mods, qkvs = {}, {}
        for s, x in streams.items():
            mods[s] = getattr(self, f"{s}_mod")(vec)
            shift, scale = mods[s][0], mods[s][1]
            h = (1 + scale) * getattr(self, f"{s}_norm1")(x) + shift
            attn = getattr(self, f"{s}_attn")
            qkvs[s] = _split_heads(attn.qkv(h), self.heads, attn.norm)
        q, k, v = (torch.cat([qkvs["txt"][i], qkvs["img"][i]], 1) for i in range(3))
        out = _attention(q, k, v, self.heads)
        n_txt = txt.shape[1]
        outs = {"txt": out[:, :n_txt], "img": out[:, n_txt:]}
        for s in streams:
            _, _, gate1, shift2, scale2, gate2 = mods[s]
            x = streams[s] + gate1 * getattr(self, f"{s}_attn").proj(outs[s])
            h = (1 + scale2) * getattr(self, f"{s}_norm2")(x) + shift2
            streams[s] = x + gate2 * getattr(self, f"{s}_mlp")(h)
        return streams["img"], streams["txt"]


class SingleStreamBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.mlp_hidden = int(dim * mlp_ratio)
        self.heads = heads
        self.linear1 = nn.Linear(dim, 3 * dim + self.mlp_hidden)
        self.linear2 = nn.Linear(dim + self.mlp_hidden, dim)
        self.norm = QKNorm(dim // heads)
        self.pre_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = Modulation(dim, 3)

    def forward(self, x, vec):
        shift, scale, gate = self.modulation(vec)
        h = self.linear1((1 + scale) * self.pre_norm(x) + shift)
        qkv, mlp = h.split([h.shape[-1] - self.mlp_hidden, self.mlp_hidden], -1)
        q, k, v = _split_heads(qkv, self.heads, self.norm)
        out = self.linear2(torch.cat([_attention(q, k, v, self.heads), F.gelu(mlp, approximate="tanh")], -1))
        return x + gate * out


class LastLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, vec):
        shift, scale = self.adaLN_modulation(vec)[:, None].chunk(2, -1)
        return self.linear((1 + scale) * self.norm_final(x) + shift)


class MiniFlux(nn.Module):
    """forward(x [B, C, H, W] noisy latent at time t ∈ [0, 1], t [B], context [B, L, context_dim]) -> velocity.

    `y` [B, vec_in_dim] is the pooled text vector when the config has `vec_in_dim` (default: the context's mean).
    """

    def __init__(self, config: MiniFluxConfig = MiniFluxConfig()):
        super().__init__()
        c = self.config = config
        self.img_in = nn.Linear(c.in_channels * c.patch**2, c.hidden)
        self.time_in = MLPEmbedder(256, c.hidden)
        self.txt_in = nn.Linear(c.context_dim, c.hidden)
        if c.vec_in_dim:
            self.vector_in = MLPEmbedder(c.vec_in_dim, c.hidden)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(c.hidden, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(c.hidden, c.heads, c.mlp_ratio) for _ in range(c.depth_single))
        self.final_layer = LastLayer(c.hidden, c.in_channels * c.patch**2)
        self.register_buffer("pos", _sincos_2d(c.latent_size // c.patch, c.hidden), persistent=False)

    def forward(self, x, t, context, y=None):
        c = self.config
        b, _, h, w = x.shape
        img = self.img_in(rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=c.patch, q=c.patch))
        img = img + self.pos[: img.shape[1]].to(img.dtype)
        txt = self.txt_in(context)
        vec = self.time_in(timestep_embedding(t).to(img.dtype))
        if c.vec_in_dim:
            vec = vec + self.vector_in(context.mean(1) if y is None else y)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec)
        x = torch.cat([txt, img], 1)
        for block in self.single_blocks:
            x = block(x, vec)
        out = self.final_layer(x[:, txt.shape[1]:], vec)
        return rearrange(out, "b (h w) (c p q) -> b c (h p) (w q)", h=h // c.patch, p=c.patch, q=c.patch)
