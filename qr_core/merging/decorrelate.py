"""Row-side decorrelation of two ΔR before merging.

Content and style ΔR of one basis update W by Q·ΔR with the same Q: their column spaces are span(Q) for
both, so only their row spaces (the input directions each one reads) can be told apart. Removing from one
ΔR its component in the other's row space, ΔR_s·(I − P_row(ΔR_c)), makes the two updates read orthogonal
input directions: ΔW_c·ΔW_sᵀ = Q·ΔR_c·ΔR_sᵀ·Qᵀ = 0 (and the same holds across bases, since
the row space of Q·ΔR is that of ΔR). P_row comes from the SVD of the other ΔR, keeping singular values
above a relative tolerance, so a rank-deficient ΔR projects onto its true row space only.

The projector depends on the other ΔR's row space only, not on its λ: a λ sweep decorrelates the same way at
every point (λ = 0 included).
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Mapping

import torch

from ..adapters.delta import QRDelta
from ..errors import SettingError

OFF = "off"
STYLE = "style ⟂ content"  # ΔR_s·(I − P_row(ΔR_c)), content as trained
CONTENT = "content ⟂ style"  # ΔR_c·(I − P_row(ΔR_s)), style as trained
BOTH = "both"  # each off the other's (original) row space
MODES = (OFF, STYLE, CONTENT, BOTH)
MODES_HELP = (f"'{STYLE}': the style ΔR loses its part in the content ΔR's row space (ΔR_s·(I − P_row(ΔR_c))); "
              f"'{CONTENT}': the reverse; '{BOTH}': each loses its part in the other's row space as trained "
              "(each is then orthogonal to the other as trained, not to the other's remainder)")


def row_basis(delta: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """Orthonormal basis [in, k] of the row space of `delta` [r, in] (k its numerical rank).

    rtol defaults to NumPy's matrix_rank rule in the ΔR's own precision, max(r, in)·eps(dtype), relative to the
    largest singular value (the SVD runs in float64; a float32 ΔR's rounding is not rank).
    """
    eps = torch.finfo(delta.dtype if delta.is_floating_point() else torch.float32).eps
    m = delta.detach().double()
    if m.numel() == 0:
        return m.new_zeros(m.shape[-1], 0)
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    if rtol is None:
        rtol = max(m.shape) * eps
    keep = int((s > rtol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    return vh[:keep].T


def remove_rows(delta: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """delta·(I − V Vᵀ) for an orthonormal V [in, k], in delta's dtype."""
    d = delta.double()
    return (d - (d @ basis) @ basis.T).to(delta.dtype)


def decorrelate_rows(content: Mapping[Hashable, torch.Tensor], style: Mapping[Hashable, torch.Tensor], mode: str,
                     rtol: float | None = None) -> tuple[dict, dict]:
    """(content, style) ΔR per target after `mode` (one of MODES); targets only one of them has stay as they are."""
    if mode not in MODES:
        raise SettingError(f"unknown decorrelation {mode!r}; choose one of {', '.join(MODES)}.")
    c, s = dict(content), dict(style)
    if mode == OFF:
        return c, s
    for name in content:
        if name not in style:
            continue
        if content[name].shape[-1] != style[name].shape[-1]:
            raise SettingError(f"target {name}: the content ΔR reads {content[name].shape[-1]} inputs and the style "
                               f"ΔR {style[name].shape[-1]}; these ΔR belong to different models.")
        if mode in (STYLE, BOTH):
            s[name] = remove_rows(style[name], row_basis(content[name], rtol))
        if mode in (CONTENT, BOTH):
            c[name] = remove_rows(content[name], row_basis(style[name], rtol))
    return c, s


def decorrelate(content: QRDelta, style: QRDelta, mode: str, rtol: float | None = None) -> tuple[QRDelta, QRDelta]:
    """The two ΔR after `mode`: new QRDelta objects (the inputs are untouched); a changed ΔR is no longer triangular."""
    if mode != OFF:
        for d in (content, style):
            if d.mode != "delta_r":
                raise SettingError(f"{d.name or 'a ΔR'} was trained in mode {d.mode!r}, whose rows hold the base R "
                                   "as well as the update; decorrelation works on ΔR-only ('delta_r') ΔR.")
    c, s = decorrelate_rows(content.delta, style.delta, mode, rtol)
    return _with_delta(content, c), _with_delta(style, s)


def _with_delta(d: QRDelta, delta: dict) -> QRDelta:
    if all(delta[n] is d.delta[n] for n in d.delta):
        return d
    return dataclasses.replace(d, delta=delta, triangular=False, triangular_basis="")
