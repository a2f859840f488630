"""A procedural content × style image world, generated on the fly from a seed.

It stands in for the photos of the paper, where no real checkpoint can be
downloaded: *content* is a shape (circle, square, …, upright, with random size
and position), *style* is how it is painted (fill pattern, palette,
background). Prompts follow the paper's template: "a <shape>",
"a <shape> in <style> style". Some shapes and some styles are held out of
pretraining: they play the new subject `<c>` and the new style `<s>`.

Images are RGB in [-1, 1] at `SIZE`×`SIZE` pixels (pixel space, no VAE),
anti-aliased by rendering at 2× and average-pooling. Everything is a pure
function of the seed, so any image can be regenerated exactly.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import SettingError

SIZE = 32

# "bar" took v1/v2's "hexagon": at 32 pixels a hexagon differs from a circle by a few edge pixels, so the small base's
# circles were scored hexagons (bench/results/world_model.md, "World model v3").
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "bar", "moon", "heart", "star", "arrow")
HELD_OUT_SHAPES = ("heart", "star", "arrow")
SEEN_SHAPES = tuple(s for s in SHAPES if s not in HELD_OUT_SHAPES)


@dataclass(frozen=True)
class Style:
    """How a shape is painted: fill pattern with two colours, and a background (plain or a pattern)."""

    name: str
    fill: str  # solid | stripes | dots | checker | gradient | outline
    c1: tuple[float, float, float]
    c2: tuple[float, float, float]
    bg: tuple[float, float, float]
    angle: float = 0.0  # stripes / gradient direction (degrees)
    period: float = 0.5  # pattern period in shape units (the image spans [-1, 1])
    bg2: tuple[float, float, float] | None = None  # a second background colour: a faint background pattern
    bg_pattern: str = "plain"  # plain | stripes | dots


STYLES = {s.name: s for s in (
    Style("crimson", "solid", (0.85, 0.1, 0.12), (0.85, 0.1, 0.12), (0.95, 0.92, 0.82)),
    Style("ocean", "gradient", (0.05, 0.25, 0.9), (0.2, 0.95, 0.95), (0.04, 0.06, 0.25), angle=90),
    Style("zebra", "stripes", (0.02, 0.02, 0.02), (0.98, 0.98, 0.98), (0.6, 0.6, 0.6), angle=45, period=0.35),
    Style("checker", "checker", (1.0, 0.85, 0.05), (0.05, 0.05, 0.05), (0.98, 0.98, 0.98), period=0.45),
    Style("mint", "solid", (0.3, 0.95, 0.55), (0.3, 0.95, 0.55), (0.12, 0.12, 0.14)),
    Style("sunset", "gradient", (1.0, 0.55, 0.05), (0.55, 0.05, 0.6), (1.0, 0.97, 0.7), angle=0),
    Style("polka", "dots", (0.9, 0.1, 0.6), (1.0, 1.0, 1.0), (0.85, 0.95, 0.85), period=0.4),
    Style("sketch", "outline", (0.05, 0.05, 0.05), (0.05, 0.05, 0.05), (0.97, 0.97, 0.94)),
    # held out of pretraining:
    Style("tiger", "stripes", (1.0, 0.5, 0.0), (0.05, 0.02, 0.0), (0.2, 0.45, 0.15), angle=0, period=0.4,
          bg2=(0.15, 0.35, 0.1), bg_pattern="stripes"),
    Style("neon", "outline", (0.1, 1.0, 1.0), (1.0, 0.1, 0.9), (0.02, 0.0, 0.08), bg2=(0.1, 0.05, 0.25),
          bg_pattern="dots"),
    Style("candy", "stripes", (1.0, 0.45, 0.7), (1.0, 1.0, 1.0), (0.55, 0.8, 1.0), angle=90, period=0.3,
          bg2=(0.7, 0.9, 1.0), bg_pattern="dots"),
)}
HELD_OUT_STYLES = ("tiger", "neon", "candy")
SEEN_STYLES = tuple(s for s in STYLES if s not in HELD_OUT_STYLES)

# Combinations of a seen shape and a seen style that pretraining never shows (not even under a shape-only or
# style-only prompt): whether the base draws them tests that it composes what it knows. One per seen shape and
# one per seen style, so each shape and each style keeps 7 of its 8 partners.
HELD_OUT_PAIRS = (("circle", "ocean"), ("square", "mint"), ("triangle", "sketch"), ("diamond", "zebra"),
                  ("cross", "sunset"), ("ring", "crimson"), ("bar", "checker"), ("moon", "polka"))


@dataclass(frozen=True)
class Pose:
    angle: float = 0.0  # degrees
    scale: float = 0.62  # half-size as a fraction of the image half-width
    dx: float = 0.0
    dy: float = 0.0
    phase: float = 0.0  # pattern phase in [0, 1)
    jitter: tuple[float, float, float] = (0.0, 0.0, 0.0)  # small colour jitter


# Shapes are drawn upright (world v3). Rotated by up to ±30° (worlds v1, v2), the 1 M-parameter base drew round,
# ragged squares and circles and reached P(shape) 0.70 on held-out pairs; upright it reached 0.85 on v2's shapes
# (bench/results/world_model.md). The encoder still learns ±30°, so upright shapes lie inside what it knows.
ROTATION = 0.0  # degrees either way


def random_pose(g: torch.Generator, rotation: float = ROTATION) -> Pose:
    u = torch.rand(7, generator=g).tolist()  # u[0] is drawn whatever the rotation, so a seed keeps its other draws
    return Pose(angle=(u[0] - 0.5) * 2 * rotation, scale=0.5 + 0.25 * u[1], dx=(u[2] - 0.5) * 0.3,
                dy=(u[3] - 0.5) * 0.3, phase=u[4], jitter=tuple((torch.rand(3, generator=g) - 0.5).mul(0.08).tolist()))


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    return x, -y  # y up


def _polygon(x, y, n: int, r: float, rot: float = 0.0) -> torch.Tensor:
    """Regular n-gon of circumradius r (inside = True)."""
    inside = torch.ones_like(x, dtype=torch.bool)
    apothem = r * math.cos(math.pi / n)
    for k in range(n):
        a = rot + 2 * math.pi * (k + 0.5) / n
        inside &= x * math.cos(a) + y * math.sin(a) <= apothem
    return inside


def shape_mask(shape: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean mask of `shape` in its own unit frame (about [-1, 1]²)."""
    r = torch.sqrt(x * x + y * y)
    if shape == "circle":
        return r <= 0.9
    if shape == "square":
        return torch.maximum(x.abs(), y.abs()) <= 0.75
    if shape == "triangle":
        return _polygon(x, y + 0.15, 3, 1.05, rot=math.pi / 2 - math.pi / 3)
    if shape == "diamond":
        return x.abs() / 0.75 + y.abs() <= 1.0
    if shape == "cross":
        return ((x.abs() <= 0.28) & (y.abs() <= 0.95)) | ((y.abs() <= 0.28) & (x.abs() <= 0.95))
    if shape == "ring":
        return (r <= 0.92) & (r >= 0.55)
    if shape == "bar":
        return (x.abs() <= 0.32) & (y.abs() <= 0.95)
    if shape == "moon":
        return (r <= 0.9) & ((x - 0.45) ** 2 + (y - 0.2) ** 2 >= 0.7 ** 2)
    if shape == "heart":
        xs, ys = x * 1.15, (y + 0.1) * 1.15
        return (xs * xs + ys * ys - 1) ** 3 - xs * xs * ys ** 3 <= 0
    if shape == "star":
        theta = torch.atan2(y, x) - math.pi / 2
        k = torch.remainder(theta, 2 * math.pi / 5) - math.pi / 5  # angle to the nearest point
        return r <= 0.42 + 0.55 * (1 - k.abs() / (math.pi / 5)) ** 2.2
    if shape == "arrow":
        shaft = (y.abs() <= 0.2) & (x >= -0.95) & (x <= 0.2)
        head = (x >= 0.1) & (x <= 0.95) & (y.abs() <= 0.75 * (0.95 - x) / 0.85 + 0.02)
        return shaft | head
    raise SettingError(f"unknown shape {shape!r}; known: {SHAPES}")


def _pattern(kind: str, x, y, period: float, angle: float, phase: float) -> torch.Tensor:
    """0/1 (or [0, 1] for gradients) pattern value in image coordinates."""
    a = math.radians(angle)
    u = x * math.cos(a) + y * math.sin(a)
    if kind == "stripes":
        return (torch.remainder(u / period + phase, 1.0) < 0.5).float()
    if kind == "checker":
        i = torch.floor(x / period + phase) + torch.floor(y / period + phase)
        return torch.remainder(i, 2).float()
    if kind == "dots":
        gx = torch.remainder(x / period + phase, 1.0) - 0.5
        gy = torch.remainder(y / period + phase, 1.0) - 0.5
        return (gx * gx + gy * gy <= 0.28 ** 2).float()
    if kind == "gradient":
        return ((u + 1) / 2).clamp(0, 1)
    return torch.zeros_like(x)


def render(shape: str, style: str | Style, pose: Pose = Pose(), size: int = SIZE, with_mask: bool = False):
    """One image [3, size, size] in [-1, 1] (and its coverage mask [size, size] in [0, 1] if asked)."""
    st = STYLES[style] if isinstance(style, str) else style
    n = size * 2
    x, y = _grid(n)
    # image -> shape frame: translate, rotate, scale
    a = math.radians(pose.angle)
    xs, ys = (x - pose.dx), (y - pose.dy)
    xl = (xs * math.cos(a) + ys * math.sin(a)) / pose.scale
    yl = (-xs * math.sin(a) + ys * math.cos(a)) / pose.scale
    inside = shape_mask(shape, xl, yl)
    jit = torch.tensor(pose.jitter)
    c1, c2, bg = (torch.tensor(c) + jit for c in (st.c1, st.c2, st.bg))
    # background
    if st.bg_pattern != "plain" and st.bg2 is not None:
        p = _pattern(st.bg_pattern, x, y, 0.5, 30.0, pose.phase)
        img = bg[:, None, None] * (1 - p) + torch.tensor(st.bg2)[:, None, None] * p
    else:
        img = bg[:, None, None].expand(3, n, n).clone()
    if st.fill == "outline":
        # a stroke along the boundary: inside minus the mask eroded by ~2 px of the 2× grid
        m = inside.float()[None, None]
        eroded = -F.max_pool2d(-m, 7, 1, 3)
        stroke = (m - eroded)[0, 0] > 0.5
        gx = _pattern("gradient", x, y, 1, 45, 0)
        col = c1[:, None, None] * (1 - gx) + c2[:, None, None] * gx
        img = torch.where(stroke, col, img)
    else:
        p = _pattern(st.fill, xl, yl, st.period, st.angle, pose.phase)
        fill = c1[:, None, None] * (1 - p) + c2[:, None, None] * p
        img = torch.where(inside, fill, img)
    img = F.avg_pool2d(img[None].clamp(0, 1), 2)[0] * 2 - 1
    if with_mask:
        return img, F.avg_pool2d(inside.float()[None, None], 2)[0, 0]
    return img


def prompt_for(shape: str | None, style: str | None) -> str:
    if shape and style:
        return f"a {shape} in {style} style"
    if shape:
        return f"a {shape}"
    if style:
        return f"an image in {style} style"
    return ""


@dataclass(frozen=True)
class Sample:
    shape: str
    style: str
    pose: Pose
    prompt: str

    def image(self, size: int = SIZE) -> torch.Tensor:
        return render(self.shape, self.style, self.pose, size)


def sample(seed: int, shapes=SEEN_SHAPES, styles=SEEN_STYLES, p_shape_only: float = 0.15,
           p_style_only: float = 0.05, p_empty: float = 0.1, exclude=(), rotation: float = ROTATION) -> Sample:
    """A deterministic training sample from its seed: shape, style, pose and a prompt in the paper's template.

    With probability `p_shape_only` the prompt names the shape only (its style is then any seen style),
    `p_style_only` the style only, `p_empty` nothing (classifier-free guidance's unconditional branch).
    (shape, style) pairs in `exclude` are redrawn from the same generator.
    """
    g = torch.Generator().manual_seed(seed)
    while True:
        shape = shapes[int(torch.randint(len(shapes), (1,), generator=g))]
        style = styles[int(torch.randint(len(styles), (1,), generator=g))]
        if (shape, style) not in exclude:
            break
    pose = random_pose(g, rotation)
    u = float(torch.rand(1, generator=g))
    if u < p_empty:
        prompt = ""
    elif u < p_empty + p_style_only:
        prompt = prompt_for(None, style)
    elif u < p_empty + p_style_only + p_shape_only:
        prompt = prompt_for(shape, None)
    else:
        prompt = prompt_for(shape, style)
    return Sample(shape, style, pose, prompt)


def batch(seeds, size: int = SIZE, **kw) -> tuple[torch.Tensor, list[str], list[Sample]]:
    samples = [sample(int(s), **kw) for s in seeds]
    return torch.stack([s.image(size) for s in samples]), [s.prompt for s in samples], samples


# ---- text encoder stand-in -------------------------------------------------------------------------------

PROMPT_LENGTH = 8


def word_vector(word: str, dim: int) -> torch.Tensor:
    """A fixed unit-scale random vector per word (seeded by its CRC32), so unseen words have embeddings too."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(zlib.crc32(word.encode())))


def encode_prompts(prompts, dim: int, length: int = PROMPT_LENGTH) -> torch.Tensor:
    """[B, length, dim]: word vectors plus a fixed position signal, padded with `<pad>`; a stand-in for T5/CLIP."""
    pos = torch.stack([word_vector(f"<pos{i}>", dim) for i in range(length)]) * 0.5
    out = []
    for p in prompts:
        words = (p.lower().split() + ["<pad>"] * length)[:length]
        out.append(torch.stack([word_vector(w, dim) for w in words]) + pos)
    return torch.stack(out)


def image_grid(images: torch.Tensor, nrow: int, pad: int = 2, scale: int = 1) -> torch.Tensor:
    """[N, 3, H, W] in [-1, 1] -> one uint8 [H', W', 3] grid."""
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    grid = torch.ones(c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for i, im in enumerate(images):
        r, k = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = im
    grid = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    if scale > 1:
        grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return grid


def save_png(array_hwc: torch.Tensor, path) -> None:
    from PIL import Image

    Image.fromarray(array_hwc.numpy()).save(path)


def labeled_rows(rows: list[torch.Tensor], labels: list[str], scale: int = 3, label_width: int = 230, pad: int = 2):
    """A PIL image: one row of images per entry of `rows` ([N, 3, H, W] each), its label written on the left."""
    from PIL import Image, ImageDraw

    n = max(r.shape[0] for r in rows)
    tiles = [Image.fromarray(image_grid(r, n, pad=pad, scale=scale).numpy()) for r in rows]
    w = label_width + max(t.width for t in tiles)
    canvas = Image.new("RGB", (w, sum(t.height for t in tiles)), "white")
    d = ImageDraw.Draw(canvas)
    y = 0
    for tile, label in zip(tiles, labels):
        canvas.paste(tile, (label_width, y))
        label = label.replace("ΔR", "dR").replace("λ", "lambda").replace("⟂", "orth.")  # Pillow's default font: no Greek
        words, line, lines = label.split(), "", []
        for word in words:  # wrap at ~36 characters
            if len(line) + len(word) > 36:
                lines.append(line)
                line = ""
            line = (line + " " + word).strip()
        lines.append(line)
        for k, text in enumerate(lines):
            d.text((4, y + tile.height // 2 - 6 * len(lines) + 12 * k), text, fill="black")
        y += tile.height
    return canvas
