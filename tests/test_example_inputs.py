"""The example images the workflows load (example_inputs/): shipped, small, drawn by the pack's own tool."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_inputs"
PNGS = sorted(EXAMPLES.glob("*.png"))


def drawing_tool():
    spec = importlib.util.spec_from_file_location("make_example_inputs", ROOT / "tools" / "make_example_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_image_a_workflow_loads_is_shipped():
    named = {}
    for path in sorted((ROOT / "workflows").glob("*.json")):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "LoadImage":
                named.setdefault(node["widgets_values"][0], []).append(path.stem)
    assert {"content_dog.png", "style_reference.png", "attribute_hat.png"} <= set(named), named
    missing = {name: wfs for name, wfs in named.items() if not (EXAMPLES / name).is_file()}
    assert not missing, f"workflows load images the pack does not ship in example_inputs/: {missing}"


def test_the_images_are_512_px_small_pngs_under_the_packs_license():
    from PIL import Image

    assert [p.name for p in PNGS] == sorted(drawing_tool().IMAGES)
    for path in PNGS:
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (512, 512), (path.name, im.format, im.size)
        assert path.stat().st_size < 32_000, f"{path.name}: {path.stat().st_size} bytes; keep examples small"
    note = (EXAMPLES / "README.md").read_text()
    assert "LICENSE" in note and "tools/make_example_inputs.py" in note


def test_the_tool_draws_the_shipped_images(tmp_path):
    """Reproducible: the tool draws the same pictures (pixel by pixel; a PNG's bytes may vary with zlib)."""
    from PIL import Image, ImageChops

    drawing_tool().write(tmp_path)
    for path in PNGS:
        with Image.open(path) as shipped, Image.open(tmp_path / path.name) as drawn:
            r, g, b = ImageChops.difference(shipped.convert("RGB"), drawn.convert("RGB")).split()
            changed = 512 * 512 - ImageChops.lighter(ImageChops.lighter(r, g), b).histogram()[0]
        # A Pillow whose rasterizer or quantizer changed may move a few edge pixels; a changed drawing moves many.
        assert changed <= 0.01 * 512 * 512, (
            f"{path.name}: {changed} pixels differ from what tools/make_example_inputs.py draws; run it again")


@pytest.mark.parametrize("existing", [b"the user's own picture", None])
def test_copy_new_never_replaces_a_file(tmp_path, existing):
    from qr_core.files import copy_new

    source, target = tmp_path / "a.png", tmp_path / "b.png"
    source.write_bytes(b"example")
    if existing is not None:
        target.write_bytes(existing)
    assert copy_new(source, target) is (existing is None)
    assert target.read_bytes() == (existing if existing is not None else b"example")
    assert copy_new(source, target) is False
    dangling = tmp_path / "link.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    assert copy_new(source, dangling) is False and not (tmp_path / "nowhere.png").exists()
