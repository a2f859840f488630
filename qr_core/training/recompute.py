"""Module forwards swapped for the length of a run (checkpointing, per-layer recompute), then restored."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
import torch.utils.checkpoint
from torch import nn


@contextlib.contextmanager
def wrapped_forwards(modules: Iterable[nn.Module], wrap: Callable[[Callable], Callable]) -> Iterator[None]:
    """Each module's forward replaced by wrap(forward); the originals (own or class) come back afterwards."""
    originals = []
    try:
        for m in modules:
            originals.append((m, "forward" in m.__dict__, m.forward))
            m.forward = wrap(m.forward)
        yield
    finally:
        for m, had_own, forward in originals:
            if had_own:
                m.forward = forward
            else:
                del m.forward


def weighted_layers(root: nn.Module) -> list[nn.Module]:
    """Leaf modules holding parameters of their own (Linear, Conv, norms): the layers that cast a weight."""
    return [m for m in root.modules() if next(m.children(), None) is None and m._parameters]


def _recomputed(forward: Callable) -> Callable:
    def run(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return run


@contextlib.contextmanager
def recomputed_in_backward(root: nn.Module) -> Iterator[None]:
    """Every weighted layer of `root` runs its forward again in backward, so autograd keeps no weight it used.

    For layers whose weight lives in a buffer that later layers overwrite
    (ComfyUI's dynamic VRAM): the recompute casts the weight anew right where
    backward needs it. Forward hooks (the ΔR bypass) stay outside: they
    save their own input, never the layer's weight.
    """
    with wrapped_forwards(weighted_layers(root), _recomputed):
        yield
