"""Draws the example images the workflows load (example_inputs/*.png), so the first queue has its inputs.

    python tools/make_example_inputs.py            # rewrites example_inputs/*.png
    python tools/make_example_inputs.py --out DIR  # somewhere else (tests/test_example_inputs.py compares)

Drawn here with Pillow, shapes only, from fixed numbers: the pack's own pictures under its own license
(LICENSE), nothing downloaded. A 512 px subject for each role the workflows train: a dog (content, "a photo of
a <c> dog"), a cat in a flat poster style with thick outlines (style, "a cat in <s> style") and a hat (the
N-way workflow's third attribute, "a photo of a <a> hat"). Saved as 32-colour palette PNGs: a few kB each.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_inputs"
SIZE = 512
COLOURS = 32


def gradient(top: tuple, bottom: tuple, split: int, ground_top: tuple, ground_bottom: tuple) -> Image.Image:
    """Sky from `top` to `bottom` above row `split`, ground below it."""
    im = Image.new("RGB", (SIZE, SIZE))
    d = ImageDraw.Draw(im)
    for y in range(SIZE):
        a, b, t = (top, bottom, y / split) if y < split else (ground_top, ground_bottom, (y - split) / (SIZE - split))
        d.line([(0, y), (SIZE, y)], fill=tuple(round(p + (q - p) * t) for p, q in zip(a, b)))
    return im


def dog() -> Image.Image:
    """A brown dog with a white muzzle, sitting on grass, three-quarter view."""
    im = gradient((150, 200, 240), (215, 235, 250), 330, (110, 170, 80), (70, 130, 55))
    d = ImageDraw.Draw(im)
    fur, dark, light = (165, 105, 60), (105, 62, 35), (240, 228, 210)
    d.ellipse((170, 440, 400, 478), fill=(60, 110, 45))  # shadow
    d.ellipse((175, 250, 365, 455), fill=fur)  # body
    d.ellipse((330, 380, 420, 420), fill=fur)  # tail
    for x in (205, 285):  # front legs and paws
        d.rounded_rectangle((x, 360, x + 40, 455), 16, fill=fur)
        d.ellipse((x - 6, 435, x + 48, 468), fill=light)
    d.ellipse((215, 290, 300, 400), fill=light)  # chest
    d.ellipse((150, 110, 330, 280), fill=fur)  # head
    d.polygon([(150, 150), (112, 250), (170, 262), (190, 150)], fill=dark)  # ears
    d.polygon([(290, 140), (365, 235), (315, 262), (300, 150)], fill=dark)
    d.ellipse((190, 185, 300, 275), fill=light)  # muzzle
    d.ellipse((227, 192, 265, 222), fill=(30, 25, 25))  # nose
    d.line([(246, 222), (246, 245)], fill=(30, 25, 25), width=4)
    d.arc((215, 225, 247, 258), 20, 160, fill=(30, 25, 25), width=4)
    d.arc((245, 225, 277, 258), 20, 160, fill=(30, 25, 25), width=4)
    for x in (195, 272):  # eyes
        d.ellipse((x, 160, x + 26, 186), fill=(35, 25, 20))
        d.ellipse((x + 6, 164, x + 14, 172), fill=(250, 250, 250))
    d.ellipse((252, 248, 270, 272), fill=(225, 95, 110))  # tongue
    return im


def cat_in_style() -> Image.Image:
    """A cat in a flat poster style: a few saturated colours, thick black outlines, a dotted sun, brush dashes."""
    rng = random.Random(7)
    im = Image.new("RGB", (SIZE, SIZE), (245, 205, 70))
    d = ImageDraw.Draw(im)
    ink, orange, cream, teal = (25, 20, 30), (230, 95, 40), (250, 235, 200), (30, 140, 150)
    for _ in range(170):  # brush dashes in the background, the style's texture
        x, y, a = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(0, math.pi)
        n = 26 * rng.uniform(0.5, 1)
        d.line([(x, y), (x + n * math.cos(a), y + n * math.sin(a))], fill=rng.choice([(240, 180, 50), (250, 220, 110)]),
               width=7)
    d.ellipse((330, 40, 470, 180), fill=(235, 70, 60), outline=ink, width=8)  # sun with halftone dots
    for i in range(5):
        for j in range(5):
            d.ellipse((352 + 22 * i, 62 + 22 * j, 362 + 22 * i, 72 + 22 * j), fill=(250, 140, 90))
    d.rectangle((0, 420, SIZE, SIZE), fill=teal, outline=ink, width=8)  # floor
    d.ellipse((120, 240, 360, 470), fill=orange, outline=ink, width=10)  # body
    d.arc((300, 300, 470, 470), 180, 300, fill=ink, width=26)  # tail
    d.arc((300, 300, 470, 470), 185, 295, fill=orange, width=12)
    d.ellipse((130, 120, 330, 300), fill=orange, outline=ink, width=10)  # head
    d.polygon([(145, 180), (150, 70), (220, 130)], fill=orange, outline=ink, width=10)  # ears
    d.polygon([(315, 180), (310, 70), (240, 130)], fill=orange, outline=ink, width=10)
    d.ellipse((185, 220, 275, 295), fill=cream, outline=ink, width=6)  # muzzle
    for x in (175, 255):  # eyes: green with a slit pupil
        d.ellipse((x, 170, x + 40, 210), fill=(120, 200, 80), outline=ink, width=6)
        d.ellipse((x + 15, 174, x + 25, 206), fill=ink)
    d.polygon([(218, 228), (242, 228), (230, 244)], fill=(230, 90, 120), outline=ink)  # nose
    for s in (-1, 1):  # whiskers
        for k in (-1, 0, 1):
            d.line([(230 + s * 40, 250 + 6 * k), (230 + s * 120, 240 + 22 * k)], fill=ink, width=4)
    for x in (170, 250):  # stripes on the body
        d.arc((x, 300, x + 80, 420), 200, 340, fill=ink, width=8)
    return im


def hat() -> Image.Image:
    """A red bucket hat with a dark band on a plain studio background."""
    im = gradient((225, 222, 215), (200, 196, 188), 380, (185, 180, 172), (160, 155, 148))
    d = ImageDraw.Draw(im)
    red, shade, band = (200, 45, 50), (150, 30, 38), (40, 40, 55)
    d.ellipse((90, 370, 430, 430), fill=(150, 145, 138))  # shadow
    d.ellipse((70, 300, 450, 410), fill=shade)  # brim
    d.ellipse((80, 296, 440, 392), fill=red)
    d.polygon([(150, 340), (175, 170), (345, 170), (370, 340)], fill=red)  # crown
    d.ellipse((175, 140, 345, 200), fill=(215, 60, 62))
    d.polygon([(160, 290), (167, 250), (353, 250), (360, 290)], fill=band)  # band
    d.ellipse((150, 310, 370, 370), fill=red)
    d.arc((150, 310, 370, 370), 0, 180, fill=shade, width=5)
    for i in range(6):  # stitching on the brim
        a = math.pi * (0.15 + 0.14 * i)
        x, y = 260 + 170 * math.cos(a), 350 + 44 * math.sin(a)
        d.line([(x - 8, y), (x + 8, y)], fill=(245, 210, 210), width=3)
    return im


IMAGES = {"content_dog.png": dog, "style_reference.png": cat_in_style, "attribute_hat.png": hat}


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in IMAGES.items():
        path = out / name
        draw().quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(OUT))
    for path in write(Path(p.parse_args(argv).out)):
        print("wrote", path, path.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
