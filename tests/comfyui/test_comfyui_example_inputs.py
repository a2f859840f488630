"""The example images reach ComfyUI's input folder when the pack loads, so every shipped workflow's Load Image
finds its file on the first queue; a file of that name already there is never replaced."""

from __future__ import annotations

import json
from pathlib import Path

import comfy_env  # noqa: F401  (skips the module without ComfyUI)

import folder_paths
import nodes

from qr_comfyui_runtime import PACK_DIR

EXAMPLES = sorted((PACK_DIR / "example_inputs").glob("*.png"))


def loaded_images() -> set[str]:
    return {node["widgets_values"][0] for path in (PACK_DIR / "workflows").glob("*.json")
            for node in json.loads(path.read_text())["nodes"] if node["type"] == "LoadImage"}


def test_loading_the_pack_puts_the_examples_into_the_input_folder(pack):
    folder = Path(folder_paths.get_input_directory())
    assert len(EXAMPLES) == 3
    for image in EXAMPLES:
        assert (folder / image.name).read_bytes() == image.read_bytes(), image.name
    # What the first queue checks: LoadImage lists the file (its combo) and validates it.
    listed = nodes.LoadImage.INPUT_TYPES()["required"]["image"][0]
    for name in sorted(loaded_images()):
        assert name in listed, (name, listed)
        assert nodes.LoadImage.VALIDATE_INPUTS(name) is True, name
        image, mask = nodes.LoadImage().load_image(name)
        assert tuple(image.shape) == (1, 512, 512, 3)


def test_a_file_of_the_same_name_is_never_replaced(pack, tmp_path):
    install = pack.module("nodes.services.example_inputs").install_example_inputs
    before = folder_paths.get_input_directory()
    folder = tmp_path / "input"
    folder.mkdir()
    own = folder / EXAMPLES[0].name
    own.write_bytes(b"the user's own picture of that name")
    folder_paths.set_input_directory(str(folder))
    try:
        copied = install()
        assert [p.name for p in copied] == [p.name for p in EXAMPLES[1:]]
        assert own.read_bytes() == b"the user's own picture of that name"
        assert all((folder / p.name).read_bytes() == p.read_bytes() for p in EXAMPLES[1:])
        assert install() == []  # the next start copies nothing
    finally:
        folder_paths.set_input_directory(before)
