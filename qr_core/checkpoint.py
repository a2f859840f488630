"""Reading a model's diffusion weights straight from a .safetensors checkpoint, one tensor at a time."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from .files import read_header
from .targets import normalize_shapes, strip_prefix

# Per-layer scales of fp8 weights: ComfyUI's old scaled-fp8 files, and the comfy_quant format (ComfyUI ≥ 0.8).
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")


class CheckpointWeights:
    """Lazy access to a checkpoint's diffusion-model weights under prefix-free keys.

    Weights stored in fp8 are dequantized to fp32, multiplied by their scale
    when the file has one (`scale_weight`, or `weight_scale` in ComfyUI's
    comfy_quant format).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        header, _ = read_header(self.path)
        raw = {k: v["shape"] for k, v in header.items()}
        self.shapes = normalize_shapes(raw)
        self._file_key = {}
        for k in raw:
            self._file_key.setdefault(strip_prefix(k), k)
        self._file = safe_open(str(self.path), framework="pt", device="cpu")

    def __call__(self, key: str) -> torch.Tensor:
        fk = self._file_key[key]
        w = self._file.get_tensor(fk)
        if w.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            w = w.float()
            for suffix in SCALE_SUFFIXES:
                scale_key = fk[: -len(".weight")] + suffix
                if scale_key in self._file.keys():
                    w = w * self._file.get_tensor(scale_key).float()
        return w
