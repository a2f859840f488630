"""Trainable ΔR attached to any torch module as a forward bypass.

For each target the module's output rows get `(x ΔRᵀ) Qᵀ` added: the weight
`W + QΔR` is never built and no gradient of W is computed, so base weights
may be fp8, offloaded or shared with other patches. This is a LoRA whose up
matrix Q is frozen and whose down matrix ΔR starts at zero; its gradient is
`Qᵀ ∂L/∂W` (paper eq. 11). Detaching removes the hooks and leaves the module
exactly as it was.

Mode "qr" trains Q and R themselves from the decomposition (paper §4.3):
the frozen part is W_comp = W − Q₀R₀, so the bypass adds `(x Rᵀ)Qᵀ − (x R₀ᵀ)Q₀ᵀ`.

`triangular` keeps ΔR upper-triangular as the official code does
(`--lora_init_method=triu_deltaR`), in the official code's own basis:
Q_official = qr(W_core) with W_core the top-r part of W, a rotation of the
paper's Q = qr(U_rΣ_r) within the same span. With (O, R′) = qr(QᵀW),
Q_official = Q·O up to column signs, so training runs in Q·O with the mask,
and the ΔR handed out lives in Q again (O·ΔR′): files, merges and exports
never see the rotation.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Callable, Iterator

import torch
from torch import nn

from ..bases.basis import Basis
from .delta import MODES, TRIANGULAR_BASIS, QRDelta
from ..errors import AdapterStateError, BasisMismatchError, SettingError
from ..bases.fingerprint import fingerprint_tensors
from ..targets import Target


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Set requires_grad=False on every parameter for the duration (ComfyUI leaves them True),
    so backward computes no dense weight gradients; restores the flags afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


class QRAdapter(nn.Module):
    """ΔR (or Q and R) parameters for the targets of a basis, hooked into a module's Linear layers."""

    def __init__(self, basis: Basis, mode: str = "delta_r", triangular: bool = False,
                 get_weight: Callable[[str], torch.Tensor] | None = None, init: QRDelta | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        if mode not in MODES:
            raise SettingError(f"mode must be one of {MODES}, not {mode!r}")
        if (mode == "qr" or triangular) and get_weight is None:
            raise SettingError("mode 'qr' and triangular ΔR need get_weight (R₀ = Q₀ᵀW, the official basis)")
        self.basis, self.mode, self.triangular = basis, mode, triangular
        self.targets = list(basis.targets)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        r = basis.rank
        self.q0 = nn.ParameterList()
        # The bypass is (x downᵀ) upᵀ, as a LoRA's: down [k, in] is what trains, ΔR ("delta_r" mode) or R
        # ("qr" mode); up is the frozen Q₀ (or its official rotation, triangular) or, in "qr" mode, the trained Q.
        self.down = nn.ParameterList()
        self.up = nn.ParameterList()  # trained Q ("qr" mode only)
        self.r0 = nn.ParameterList()
        self.rotation = nn.ParameterList()  # O per target (triangular only): the official basis is Q·O ...
        self.q_official = nn.ParameterList()  # ... computed once: the bypass runs in it
        if init is not None:
            self._check_init(init)
        for t in self.targets:
            q0 = basis.q[t.name].to(device, torch.float32).clone()  # a normal tensor even if Q was made under inference_mode
            self.q0.append(nn.Parameter(q0, requires_grad=False))
            if mode == "delta_r":
                start = init.delta[t.name] if init is not None else torch.zeros(r, basis.targets.shapes[t.key][1])
                start = start.to(device, torch.float32).clone()
                if triangular:
                    w = get_weight(t.key)
                    rotation = official_rotation(q0, w[t.rows(w.shape[0])])
                    self.rotation.append(nn.Parameter(rotation, requires_grad=False))
                    self.q_official.append(nn.Parameter(q0 @ rotation, requires_grad=False))
                    start = rotation.T @ start  # ΔR′ in the official basis
                    self._check_triangular(start, t.name, init)
                d = nn.Parameter(start)
                if triangular:
                    mask = torch.ones_like(d).triu()
                    d.data.mul_(mask)
                    d.register_hook(lambda g, m=mask: g * m)  # masked entries get no update, so stay exactly 0
                self.down.append(d)
            else:
                w = get_weight(t.key)
                r0 = q0.T @ w[t.rows(w.shape[0])].to(device, torch.float32)
                self.r0.append(nn.Parameter(r0, requires_grad=False))
                self.up.append(nn.Parameter(q0.clone()))
                self.down.append(nn.Parameter(r0.clone()))

    def _check_init(self, init: QRDelta) -> None:
        if init.mode != self.mode or init.rank != self.basis.rank:
            raise BasisMismatchError(f"cannot resume from a {init.mode} ΔR of rank {init.rank} "
                                     f"in a {self.mode} run of rank {self.basis.rank}.")
        if init.basis_fingerprint != self.basis.fingerprint:
            raise BasisMismatchError("the ΔR to resume from was trained in another basis Q (other weights or settings); "
                                     "resume only with the QR_BASIS it was trained from.")

    @staticmethod
    def _check_triangular(start: torch.Tensor, name: str, init: QRDelta | None) -> None:
        if init is None:
            return
        below = float(start.tril(-1).abs().amax()) if start.shape[0] > 1 else 0.0
        if below > 1e-4 * max(float(start.abs().amax()), 1e-12):
            raise BasisMismatchError(
                f"the ΔR to resume from is not upper-triangular in the official basis (target {name}): it was "
                "trained without the mask, or with an older version's mask in the paper basis; resume it with "
                "triangular off, or train a new triangular ΔR.")

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def _update(self, i: int, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        if self.mode == "delta_r":
            q = self.q_official[i] if self.triangular else self.q0[i]
            return (x @ self.down[i].to(dt).T) @ q.to(dt).T
        trained = (x @ self.down[i].to(dt).T) @ self.up[i].to(dt).T
        return trained - (x @ self.r0[i].to(dt).T) @ self.q0[i].to(dt).T

    def attach(self, root: nn.Module, prefix: str = "") -> "QRAdapter":
        """Hook every target's Linear inside `root` (keys are looked up as prefix + key)."""
        if self._handles:
            raise AdapterStateError("adapter is already attached; detach it first")
        per_module: dict[str, list[tuple[int, Target]]] = defaultdict(list)
        for i, t in enumerate(self.targets):
            per_module[prefix + t.key[: -len(".weight")]].append((i, t))
        for path, items in per_module.items():
            try:
                mod = root.get_submodule(path)
            except AttributeError:
                self.detach()
                raise BasisMismatchError(f"the model has no layer {path}: this basis was made for another model.") from None
            items.sort(key=lambda it: it[1].offset or 0)
            self._handles.append(mod.register_forward_hook(self._hook(items)))
        return self

    def _hook(self, items: list[tuple[int, Target]]):
        def hook(mod, args, out):
            x = args[0]
            rows = out.shape[-1]
            pieces, pos = [], 0
            for i, t in items:
                s = t.rows(rows)
                if s.start > pos:
                    pieces.append(out.new_zeros(*out.shape[:-1], s.start - pos))
                pieces.append(self._update(i, x).to(out.dtype))
                pos = s.stop
            if pos < rows:
                pieces.append(out.new_zeros(*out.shape[:-1], rows - pos))
            return out + (pieces[0] if len(pieces) == 1 else torch.cat(pieces, -1))
        return hook

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextlib.contextmanager
    def attached(self, root: nn.Module, prefix: str = "") -> Iterator["QRAdapter"]:
        self.attach(root, prefix)
        try:
            yield self
        finally:
            self.detach()

    def to_delta(self, trigger_words: str = "", training: dict | None = None, name: str = "") -> QRDelta:
        """The current parameters as a QRDelta (fp32, on the CPU)."""
        q, delta = {}, {}
        for i, t in enumerate(self.targets):
            if self.mode == "delta_r":
                q[t.name] = self.q0[i].detach().cpu().clone()
                d = self.rotation[i] @ self.down[i] if self.triangular else self.down[i]  # back in Q
                delta[t.name] = d.detach().float().cpu().clone()
            else:
                q[t.name] = torch.cat([self.up[i], self.q0[i]], 1).detach().float().cpu()
                delta[t.name] = torch.cat([self.down[i], -self.r0[i]], 0).detach().float().cpu()
        # A trained Q is a basis of its own: only ΔR from the shared, frozen Q₀ can be summed.
        fingerprint = self.basis.fingerprint if self.mode == "delta_r" else "qr-trained:" + fingerprint_tensors(q)
        return QRDelta(self.basis.targets, self.basis.rank, q, delta, fingerprint, self.basis.weights_fingerprint,
                       self.mode, self.triangular, trigger_words, dict(training or {}), name=name,
                       triangular_basis=TRIANGULAR_BASIS if self.triangular and self.mode == "delta_r" else "")


def official_rotation(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """O [r, r] with Q·O the official code's basis: (O, R′) = qr(QᵀW), signs fixed so that diag(R′) ≥ 0.

    The official code takes Q_official from qr(W_core), W_core = U_rΣ_rV_rᵀ;
    QᵀW_core = QᵀW because Q spans U_r, so W_core = Q·(QᵀW) = (Q·O)·R′.
    """
    o, r = torch.linalg.qr(q.T @ w.to(q.device, torch.float32))
    signs = torch.where(torch.diagonal(r) < 0, -1.0, 1.0)
    return o * signs
