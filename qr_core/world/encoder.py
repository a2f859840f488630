"""An image encoder trained on the world: the analogue of the DINO / CLIP image features the paper scores with.

A small CNN with two heads: one classifies the shape (content), one the
style, each over *all* shapes and styles of the world, held-out ones
included (an evaluator, like DINO, has seen the concepts it judges). Its
penultimate features per head give the content and style embeddings; cosine
similarity between embeddings is the content / style score, and the class
probabilities are the ground-truth checks. Trained on clean renders with
noise and blur augmentation, so it tolerates imperfect samples.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import scenes
from ..errors import SettingError
from ..files import load_tensors

ASSET = Path(__file__).parent / "assets" / "world_encoder.safetensors"


class WorldEncoder(nn.Module):
    def __init__(self, width: int = 16, feat: int = 64):
        super().__init__()
        w = width

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU(),
                                 nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(8, o), nn.SiLU())

        self.trunk = nn.Sequential(block(3, w), nn.AvgPool2d(2), block(w, 2 * w), nn.AvgPool2d(2), block(2 * w, 2 * w))
        self.content_proj = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 8 * 8, feat), nn.SiLU())
        self.style_proj = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(2 * w * 4, feat), nn.SiLU())
        self.shape_head = nn.Linear(feat, len(scenes.SHAPES))
        self.style_head = nn.Linear(feat, len(scenes.STYLES))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.content_proj(h), self.style_proj(h)

    def forward(self, x):
        c, s = self.features(x)
        return self.shape_head(c), self.style_head(s)


def load_encoder(path: str | Path = ASSET) -> WorldEncoder:
    tensors, meta = load_tensors(path)
    shapes = json.loads((meta or {}).get("shapes", "null"))
    if shapes is not None and tuple(shapes) != scenes.SHAPES:
        # its outputs are indexed by the shapes it learnt: another world's encoder would score the wrong classes
        raise SettingError(f"{path} scores the shapes {shapes}, this world has {list(scenes.SHAPES)}: "
                           f"retrain it with `python -m qr_core.world.encoder`")
    enc = WorldEncoder()
    enc.load_state_dict(tensors)
    return enc.eval()


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    sigma = torch.rand(b, 1, 1, 1, generator=g) * 0.25
    x = x + sigma * torch.randn(x.shape, generator=g)
    blur = torch.rand(b, generator=g) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None]) / 16
        xb = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3), groups=3)
        x = x.clone()
        x[blur] = xb
    return x.clamp(-1, 1)


ENCODER_ROTATION = 30.0  # degrees either way (scenes.ROTATION is the world's)


def train_encoder(out: str | Path = ASSET, steps: int = 1500, batch: int = 48, lr: float = 2e-3, seed: int = 0,
                  log=print) -> tuple[WorldEncoder, dict]:
    """Train on all shapes × styles (seeded); write the weights and a held-out-seed accuracy to `out`."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    enc = WorldEncoder()
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=1e-4)
    shape_ix = {s: i for i, s in enumerate(scenes.SHAPES)}
    style_ix = {s: i for i, s in enumerate(scenes.STYLES)}
    # rotated shapes too, as worlds v1 and v2 drew them: wider than the upright world it judges
    kw = dict(shapes=scenes.SHAPES, styles=tuple(scenes.STYLES), rotation=ENCODER_ROTATION)
    t0 = time.perf_counter()
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 7919 + step + 10**6)
        x, _, samples = scenes.batch(torch.randint(2**31 - 1, (batch,), generator=g).tolist(), **kw)
        ys = torch.tensor([shape_ix[s.shape] for s in samples])
        yt = torch.tensor([style_ix[s.style] for s in samples])
        lr_now = lr * 0.5 * (1 + torch.cos(torch.tensor(step / steps * 3.14159))).item()
        for group in opt.param_groups:
            group["lr"] = lr_now
        ls, lt = enc(_augment(x, g))
        loss = F.cross_entropy(ls, ys) + F.cross_entropy(lt, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log(f"encoder step {step + 1}/{steps} loss {loss.item():.3f}")
    enc.eval()
    x, _, samples = scenes.batch(range(-1000, -500), **kw)  # seeds never used in training
    with torch.no_grad():
        ls, lt = enc(x)
    acc = {"shape": float((ls.argmax(1) == torch.tensor([shape_ix[s.shape] for s in samples])).float().mean()),
           "style": float((lt.argmax(1) == torch.tensor([style_ix[s.style] for s in samples])).float().mean())}
    info = {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "rotation": ENCODER_ROTATION,
            "threads": torch.get_num_threads(), "accuracy_clean_500": acc,
            "seconds": round(time.perf_counter() - t0, 1)}
    log(f"encoder accuracy on 500 unseen renders: {acc}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(out),
                  {"info": json.dumps(info), "command": "python -m qr_core.world.encoder",
                   "shapes": json.dumps(scenes.SHAPES), "styles": json.dumps(list(scenes.STYLES))})
    return enc, info


class Scorer:
    """Content / style scores of generated images, as in the paper's Table 1, plus the world's ground truth."""

    def __init__(self, encoder: WorldEncoder | None = None):
        self.enc = encoder or load_encoder()

    @torch.no_grad()
    def embed(self, x: torch.Tensor):
        c, s = self.enc.features(x)
        ls, lt = self.enc.shape_head(c), self.enc.style_head(s)
        return F.normalize(c, dim=1), F.normalize(s, dim=1), ls.softmax(1), lt.softmax(1)

    @torch.no_grad()
    def score(self, images: torch.Tensor, content_ref: torch.Tensor, style_ref: torch.Tensor,
              shape: str, style: str) -> dict:
        """Per-image means: content_sim (cos to the content reference's content features), style_sim
        (cos to the style reference's style features), p_shape / p_style (classifier probability of the
        true shape / style), shape_acc / style_acc (argmax correct)."""
        c, s, ps, pt = self.embed(images)
        cr, _, _, _ = self.embed(content_ref[None] if content_ref.ndim == 3 else content_ref)
        _, sr, _, _ = self.embed(style_ref[None] if style_ref.ndim == 3 else style_ref)
        i, j = scenes.SHAPES.index(shape), list(scenes.STYLES).index(style)
        return {"content_sim": float((c @ cr[0]).mean()), "style_sim": float((s @ sr[0]).mean()),
                "p_shape": float(ps[:, i].mean()), "p_style": float(pt[:, j].mean()),
                "shape_acc": float((ps.argmax(1) == i).float().mean()),
                "style_acc": float((pt.argmax(1) == j).float().mean())}


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_encoder(log=lambda m: print(m, flush=True))
