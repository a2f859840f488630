"""Shared helpers for the qr_core tests."""

import torch

from qr_core.world.mini_flux import MiniFluxConfig

TINY = MiniFluxConfig(hidden=48, heads=2, depth=1, depth_single=1, context_dim=16, latent_size=8)


def power_law(m: int, n: int, alpha: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A matrix with a slowly decaying spectrum σᵢ ∝ i^-alpha, like trained weights."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
    s = torch.arange(1, k + 1, dtype=torch.float32) ** -alpha
    return (u * s) @ v.T
