"""One-image content and style tasks on the world model, the adapters trained on them, and their merges.

Shared by `python -m qr_core demo` and `bench/disentangle.py`. A content task
is a held-out shape `<c>` painted in a seen style, prompted "a <c>"; a style
task is a seen shape painted in a held-out style `<s>`, prompted
"a <shape> in <s> style"; the merge is prompted "a <c> in <s> style" (the
paper's template). Both methods are trained by the same loop (`training.train`,
same steps, LR, optimiser, data and noise) on the same targets:

* QR-LoRA ΔR (`QRAdapter`, delta_r mode): W + QΔR, Q from one shared decomposition;
* an ordinary LoRA (`LoRAAdapter`): W + BA, B = 0 and A Kaiming-uniform at the start, as PEFT/diffusers do
  (the paper's DB-LoRA baseline), merged by adding BA of the two tasks.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn

from . import scenes
from ..adapters.bypass import QRAdapter, frozen
from ..bases.basis import Basis
from ..adapters.delta import QRDelta
from ..merging.merge import add_to_weights, merge
from ..merging.lambda_schedule import Schedule
from .mini_flux import MiniFlux
from ..targets import TargetSet
from ..training.loop import TrainSettings, train
from .model import encode, flow_loss, generate


@dataclass(frozen=True)
class Task:
    kind: str  # content | style
    shape: str
    style: str
    prompt: str
    pose: scenes.Pose

    @property
    def image(self) -> torch.Tensor:
        return scenes.render(self.shape, self.style, self.pose)


def content_task(shape: str, ref_style: str = "sketch", pose_seed: int = 0) -> Task:
    return Task("content", shape, ref_style, scenes.prompt_for(shape, None),
                scenes.random_pose(torch.Generator().manual_seed(10_000 + pose_seed)))


def style_task(style: str, ref_shape: str = "circle", pose_seed: int = 0) -> Task:
    return Task("style", ref_shape, style, scenes.prompt_for(ref_shape, style),
                scenes.random_pose(torch.Generator().manual_seed(20_000 + pose_seed)))


def merged_prompt(content: Task, style: Task) -> str:
    return scenes.prompt_for(content.shape, style.style)


def task_loss_fn(model: MiniFlux, task: Task, seed: int, batch: int = 4):
    """loss_fn(step) for `training.train`: the flow loss on the one image, `batch` noise draws per step."""
    x0 = task.image[None].expand(batch, -1, -1, -1)
    ctx = encode([task.prompt] * batch, model.config)
    gen = torch.Generator().manual_seed(seed)
    return lambda step: flow_loss(model, x0, ctx, gen)


class LoRAAdapter(nn.Module):
    """An ordinary LoRA (W + (α/r)·BA, α = r) on the same targets as a ΔR, as a forward bypass."""

    def __init__(self, targets: TargetSet, rank: int, seed: int = 0):
        super().__init__()
        self.targets, self.rank = list(targets), rank
        g = torch.Generator().manual_seed(seed)
        self.down = nn.ParameterList()
        self.up = nn.ParameterList()
        for t in self.targets:
            rows, cols = targets.shape(t)
            a = torch.empty(rank, cols)
            bound = 1 / math.sqrt(cols)  # kaiming_uniform_(a=√5), PEFT's lora_A init
            a.uniform_(-bound, bound, generator=g)
            self.down.append(nn.Parameter(a))
            self.up.append(nn.Parameter(torch.zeros(rows, rank)))
        self._handles = []

    def trainable(self):
        return list(self.parameters())

    def attach(self, root: nn.Module):
        per_module = defaultdict(list)
        for i, t in enumerate(self.targets):
            per_module[t.key[: -len(".weight")]].append((i, t))
        for path, items in per_module.items():
            self._handles.append(root.get_submodule(path).register_forward_hook(self._hook(items)))
        return self

    def _hook(self, items):
        def hook(mod, args, out):
            x, rows = args[0], out.shape[-1]
            add = out.new_zeros(out.shape)
            for i, t in items:
                s = t.rows(rows)
                add[..., s] = (x @ self.down[i].T) @ self.up[i].T
            return out + add
        return hook

    def detach(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def updates(self) -> dict[str, torch.Tensor]:
        """Per target name: the dense ΔW = BA of its rows."""
        return {t.name: (self.up[i] @ self.down[i]).detach() for i, t in enumerate(self.targets)}

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def qr_updates(delta: QRDelta) -> dict[str, torch.Tensor]:
    return {term.target.name: term.dense() for term in merge([delta], [1.0])}


@dataclass
class Trained:
    updates: dict[str, torch.Tensor]  # target name -> dense ΔW of its rows
    losses: list[float]
    seconds: float
    params: int
    delta: QRDelta | None = None
    lora: LoRAAdapter | None = None
    extra: dict = field(default_factory=dict)


def train_qr(model: MiniFlux, basis: Basis, task: Task, settings: TrainSettings, data_seed: int = 0,
             on_step=None, mode: str = "delta_r", triangular: bool = False) -> Trained:
    """Train ΔR (mode "delta_r", Q frozen; `triangular`: the official code's mask in its basis) or Q and R
    together (mode "qr", paper §4.3; `extra["q"]` = trained Q)."""
    weights = model.state_dict()
    adapter = QRAdapter(basis, mode=mode, triangular=triangular,
                        get_weight=weights.__getitem__ if mode == "qr" or triangular else None)
    with frozen(model), adapter.attached(model):
        res = train(adapter.trainable(), task_loss_fn(model, task, data_seed), settings, on_step)
    d = adapter.to_delta(trigger_words=task.prompt, training=settings.to_json(), name=task.kind)
    extra = {"q": {t.name: adapter.up[i].detach().clone() for i, t in enumerate(adapter.targets)}} if mode == "qr" else {}
    return Trained(qr_updates(d), res.losses, res.seconds, d.num_params(), delta=d, extra=extra)


def train_lora(model: MiniFlux, targets: TargetSet, rank: int, task: Task, settings: TrainSettings,
               data_seed: int = 0, on_step=None) -> Trained:
    lora = LoRAAdapter(targets, rank, seed=settings.seed)
    with frozen(model):
        lora.attach(model)
        try:
            res = train(lora.trainable(), task_loss_fn(model, task, data_seed), settings, on_step)
        finally:
            lora.detach()
    return Trained(lora.updates(), res.losses, res.seconds, lora.num_params(), lora=lora)


def patched_model(model: MiniFlux, targets: TargetSet, parts: list[tuple[dict[str, torch.Tensor], float]]) -> MiniFlux:
    """A copy of `model` with W + Σ λ·ΔW for the (updates, λ) in `parts` (merge by addition)."""
    by_name = {t.name: t for t in targets}
    state = add_to_weights(model.state_dict(), ((by_name[name], lam * dw) for updates, lam in parts if lam != 0
                                                for name, dw in updates.items()))
    m = MiniFlux(model.config).eval()
    m.load_state_dict(state)
    return m


def sample_images(model: MiniFlux, prompt: str, n: int, seed: int, steps: int = 24, guidance: float = 3.0,
                  model_at=None):
    return generate(model, [prompt] * n, seed=seed, steps=steps, guidance=guidance, model_at=model_at)


def scheduled_models(model: MiniFlux, targets: TargetSet, content: dict[str, torch.Tensor],
                     style: dict[str, torch.Tensor], lc: float, ls: float, schedule: Schedule):
    """model_at(t) for `generate`: W + λc·c(t)·ΔW_c + λs·s(t)·ΔW_s, the point active at t by the one rule
    ComfyUI's keyframes follow (`Schedule.index_at`; the world's t = 1 − progress); one copy per point."""
    copies: dict[int, MiniFlux] = {}

    def model_at(t: float) -> MiniFlux:
        i = schedule.index_at(t)
        if i not in copies:
            _, fc, fs = schedule.points[i]
            copies[i] = patched_model(model, targets, [(content, lc * fc), (style, ls * fs)])
        return copies[i]
    return model_at


def ziplora_merge(model: MiniFlux, targets: TargetSet, content: Trained, style: Trained, content_task_: Task,
                  style_task_: Task, steps: int = 100, lr: float = 1e-2, lam: float = 0.01, batch: int = 4,
                  seed: int = 0, parts: bool = False):
    """ZipLoRA (Shah et al. 2023): learn per-column merger vectors m_c, m_s (ΔW_m = ΔW_c·diag(m_c) + ΔW_s·diag(m_s))
    so the merged model reproduces each LoRA model's output on its own task, with λ·Σ|cos(columns of the two
    scaled updates)| pushing the two apart. Returns the merged dense updates (target name -> ΔW) and the losses;
    with `parts`, the two scaled updates (ΔW_c·diag(m_c), ΔW_s·diag(m_s)) instead of their sum, to weight by λc, λs."""
    from torch.func import functional_call

    by_name = {t.name: t for t in targets}
    names = [n for n in content.updates if n in style.updates]
    mc = {n: nn.Parameter(torch.ones(content.updates[n].shape[1])) for n in names}
    ms = {n: nn.Parameter(torch.ones(style.updates[n].shape[1])) for n in names}
    base = {k: v.detach() for k, v in model.state_dict().items()}
    refs = {"content": patched_model(model, targets, [(content.updates, 1.0)]),
            "style": patched_model(model, targets, [(style.updates, 1.0)])}
    tasks = {"content": content_task_, "style": style_task_}
    ctx = {k: encode([t.prompt] * batch, model.config) for k, t in tasks.items()}
    x0s = {k: t.image[None].expand(batch, -1, -1, -1) for k, t in tasks.items()}
    opt = torch.optim.Adam([*mc.values(), *ms.values()], lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []

    def merged_updates():
        return {n: content.updates[n] * mc[n][None] + style.updates[n] * ms[n][None] for n in names}

    with frozen(model):
        for _ in range(steps):
            ups = merged_updates()
            params = dict(base)
            for n, dw in ups.items():
                t = by_name[n]
                w = params[t.key]
                rows = t.rows(w.shape[0])
                params[t.key] = torch.cat([w[: rows.start], w[rows] + dw, w[rows.stop:]], 0)
            loss = 0.0
            for k in tasks:
                noise = torch.randn(x0s[k].shape, generator=g)
                tt = torch.sigmoid(torch.randn(batch, generator=g))
                xt = (1 - tt)[:, None, None, None] * x0s[k] + tt[:, None, None, None] * noise
                with torch.no_grad():
                    target = refs[k](xt, tt, ctx[k])
                loss = loss + torch.nn.functional.mse_loss(functional_call(model, params, (xt, tt, ctx[k])), target)
            cos = sum(torch.nn.functional.cosine_similarity(content.updates[n] * mc[n][None],
                                                           style.updates[n] * ms[n][None], dim=0).abs().sum()
                      for n in names)
            total = loss + lam * cos
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
    with torch.no_grad():
        if parts:
            return ({n: (content.updates[n] * mc[n][None]).detach() for n in names},
                    {n: (style.updates[n] * ms[n][None]).detach() for n in names}), losses
        return {n: v.detach() for n, v in merged_updates().items()}, losses
