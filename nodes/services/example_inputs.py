"""The example images the shipped workflows load, put into ComfyUI's input folder so that a first queue finds them."""

from __future__ import annotations

import logging
from pathlib import Path

import folder_paths

from ...qr_core.files import copy_new

EXAMPLE_INPUTS = Path(__file__).resolve().parents[2] / "example_inputs"


def install_example_inputs(target: str | Path | None = None) -> list[Path]:
    """Copy each example image into `target` (default: ComfyUI's input folder) where no file of its name is.

    A file already there is left as it is, whatever it holds: it may be the user's own picture of that name.
    Returns the files copied. A folder that cannot be written to is logged, not raised: the pack still loads.
    """
    target = Path(target if target is not None else folder_paths.get_input_directory())
    copied = []
    for image in sorted(EXAMPLE_INPUTS.glob("*.png")):
        try:
            target.mkdir(parents=True, exist_ok=True)
            if copy_new(image, target / image.name):
                copied.append(target / image.name)
        except OSError as e:
            logging.warning("QR-LoRA: could not copy the example image %s into %s (%s); the example workflows "
                            "then need an image picked in their Load Image nodes.", image.name, target, e)
    if copied:
        logging.info("QR-LoRA: example images for the workflows copied into %s: %s", target,
                     ", ".join(p.name for p in copied))
    return copied
