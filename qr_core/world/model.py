"""The small text-to-image flow model of the procedural world: config, loading, flow loss, sampler, pretraining.

The model is a `MiniFlux` (FLUX layout, ComfyUI key names, fused qkv) on
32×32 RGB pixels, conditioned on `scenes.encode_prompts`. It is trained with
the rectified-flow objective of SD3/FLUX (x_t = (1−t)·x0 + t·noise, regress
the velocity noise − x0, t logit-normal) with 10 % empty prompts, so it
samples with classifier-free guidance. The shipped weights
(`assets/world_model.safetensors`) are the EMA weights written by
`pretrain()` (`tools/pretrain_world_model.py`); their metadata records the
command, machine, steps and seed.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import scenes
from ..errors import SettingError
from ..files import atomic_save, load_tensors
from ..machine import describe_machine
from .mini_flux import MiniFlux, MiniFluxConfig

ASSET = Path(__file__).parent / "assets" / "world_model.safetensors"

WORLD_CONFIG = MiniFluxConfig(in_channels=3, patch=4, hidden=96, heads=4, mlp_ratio=4.0, depth=2, depth_single=2,
                              context_dim=32, latent_size=scenes.SIZE, vec_in_dim=32)


def encode(prompts, config: MiniFluxConfig = WORLD_CONFIG) -> torch.Tensor:
    return scenes.encode_prompts(prompts, config.context_dim)


def load_world_model(path: str | Path = ASSET) -> tuple[MiniFlux, dict]:
    """The shipped (or a given) world model in eval mode, and its file metadata."""
    tensors, meta = load_tensors(path)
    meta = meta or {}
    unknown = set(json.loads(meta.get("world", "{}")).get("seen_shapes", ())) - set(scenes.SHAPES)
    if unknown:  # a model of an earlier world (v1/v2 drew hexagons): its prompts would name shapes nothing scores
        raise SettingError(f"{path} learnt shapes this world does not have ({sorted(unknown)}); use the shipped "
                           f"world model or pretrain one with tools/pretrain_world_model.py")
    config = MiniFluxConfig(**json.loads(meta["config"])) if "config" in meta else WORLD_CONFIG
    model = MiniFlux(config)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.eval(), meta


def sample_t(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SD3's logit-normal timestep density (m = 0, s = 1)."""
    return torch.sigmoid(torch.randn(n, generator=generator))


def flow_loss(model, x0: torch.Tensor, context: torch.Tensor, generator: torch.Generator | None = None,
              t: torch.Tensor | None = None) -> torch.Tensor:
    """Rectified-flow loss: ‖model(x_t, t, c) − (noise − x0)‖² with x_t = (1−t)·x0 + t·noise."""
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator)
    t = sample_t(b, generator) if t is None else t
    tt = t[:, None, None, None]
    xt = (1 - tt) * x0 + tt * noise
    return F.mse_loss(model(xt, t, context), noise - x0)


@torch.no_grad()
def generate(model, prompts, seed: int = 0, steps: int = 24, guidance: float = 3.0,
             noise: torch.Tensor | None = None, model_at=None) -> torch.Tensor:
    """Euler integration of the flow ODE from t = 1 (noise) to 0 with classifier-free guidance -> [B, 3, H, W].

    `model_at(t)`, if given, is the model of the step at noise level t (λ over steps); `model` gives the config.
    """
    prompts = list(prompts)
    c = model.config
    n = len(prompts)
    size = c.latent_size
    x = noise.clone() if noise is not None else torch.randn(
        n, c.in_channels, size, size, generator=torch.Generator().manual_seed(seed))
    cond = encode(prompts, c)
    uncond = encode([""] * n, c)
    ts = torch.linspace(1, 0, steps + 1)
    for i in range(steps):
        t = ts[i].expand(n)
        step_model = model_at(float(ts[i])) if model_at is not None else model
        if guidance != 1.0:
            v = step_model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]))
            vc, vu = v.chunk(2)
            v = vu + guidance * (vc - vu)
        else:
            v = step_model(x, t, cond)
        x = x + (ts[i + 1] - ts[i]) * v
    return x.clamp(-1, 1)


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 5000
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 100
    ema: float = 0.995
    decay_start: int = 2500  # > 0: constant LR until this step, then linear decay to 0 at `steps`
    seed: int = 0
    threads: int = 1  # one thread per process is much faster than two on a shared 2-core VM


def pretrain(out: str | Path, s: PretrainSettings = PretrainSettings(), config: MiniFluxConfig = WORLD_CONFIG,
             checkpoint: str | Path | None = None, log=print, sample_every: int = 500, command: str = "",
             init: str | Path | None = None) -> Path:
    """Train the world model from scratch, from the weights of the world model file `init` (same config; a
    fresh optimizer, step 0), or resume `checkpoint`, and write its EMA weights to `out`.

    Every step's data, timesteps and noise come from a generator seeded by (seed, step), and the LR is
    constant after warm-up, so a run stopped at step k and resumed, or a run with `steps=k`, gives the same
    weights at step k (up to `decay_start`, after which the LR decays linearly to 0 at `steps`).
    """
    from safetensors.torch import save_file

    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    model = MiniFlux(config)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.0, betas=(0.9, 0.99))
    start, prior_seconds = 0, 0.0
    ckpt_path = Path(checkpoint) if checkpoint else Path(str(out) + ".ckpt")
    init_record = None
    if init is not None:
        init_model, init_meta = load_world_model(init)
        if init_model.config != config:  # compared as configs: a file from before a field existed has its default
            raise SettingError(f"{init} is a world model of another shape ({init_meta.get('config')}); "
                               f"--init needs one of {config.to_json()}: drop --init to train from scratch")
        model.load_state_dict(init_model.state_dict())
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # what the new weights grew from, so the file's recipe stays complete
        init_record = {k: init_meta.get(k, "") for k in ("steps", "command", "settings", "train_seconds")}
    if ckpt_path.exists():
        start, prior_seconds = load_resume_state(ckpt_path, model, ema, opt)
        log(f"resumed from {ckpt_path} at step {start}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shapes, styles, held_out = scenes.SEEN_SHAPES, scenes.SEEN_STYLES, scenes.HELD_OUT_PAIRS
    probe = [scenes.prompt_for(sh, st) for sh, st in held_out]
    t0, losses = time.perf_counter(), []
    scorer = None

    def write(step: int):
        meta = {"config": json.dumps(config.to_json()), "steps": str(step), "seed": str(s.seed),
                "settings": json.dumps(s.__dict__), "command": command, "machine": describe_machine(),
                "objective": "rectified flow (SD3/FLUX): v = noise - x0, t ~ logit-normal(0, 1), 10% empty prompts",
                "weights": f"EMA {s.ema}, stored as float16",
                "world": json.dumps({"seen_shapes": shapes, "seen_styles": styles, "held_out_pairs": held_out,
                                     "size": scenes.SIZE, "rotation": scenes.ROTATION}),
                "train_seconds": f"{prior_seconds + time.perf_counter() - t0:.0f}"}
        if init_record:
            meta["init"] = json.dumps(init_record)
        # float16 halves the shipped file; sampling runs in float32 (load_world_model) and differs by < 1e-3
        save_file({k: v.half().contiguous() if v.is_floating_point() else v.contiguous() for k, v in ema.items()},
                  str(out), meta)
        save_resume_state(ckpt_path, model, ema, opt, step, prior_seconds + time.perf_counter() - t0)

    model.train()
    for step in range(start, s.steps):
        g = torch.Generator().manual_seed(s.seed * 1_000_003 + step)
        seeds = torch.randint(2**31 - 1, (s.batch,), generator=g).tolist()
        x0, prompts, _ = scenes.batch(seeds, shapes=shapes, styles=styles, exclude=held_out)
        lr = s.lr * min(1.0, (step + 1) / s.warmup)
        if 0 < s.decay_start <= step:
            lr *= (s.steps - step) / (s.steps - s.decay_start)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = flow_loss(model, x0, encode(prompts, config), g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(s.ema).add_(v.detach(), alpha=1 - s.ema) if v.dtype.is_floating_point else ema[k].copy_(v)
        losses.append(loss.item())
        if (step + 1) % 25 == 0:
            rate = (time.perf_counter() - t0) / len(losses)
            log(f"step {step + 1}/{s.steps} loss {sum(losses[-25:]) / 25:.4f} lr {lr:.2e} {rate:.2f} s/step")
        if (step + 1) % sample_every == 0 or step + 1 == s.steps:
            write(step + 1)
            if sample_every:
                m = MiniFlux(config).eval()
                m.load_state_dict(ema)
                imgs = generate(m, probe, seed=0)
                scenes.save_png(scenes.image_grid(imgs, len(probe), scale=3), str(out) + f".step{step + 1}.png")
                try:
                    from .encoder import Scorer
                    scorer = scorer or Scorer()
                    comp = composition_scores(m, held_out, scorer, n=4, steps=20)
                    log(f"held-out pairs at step {step + 1}: P(shape) {comp['p_shape']:.3f} "
                        f"P(style) {comp['p_style']:.3f} (argmax {comp['shape_acc']:.3f} / {comp['style_acc']:.3f})")
                except FileNotFoundError:
                    pass
            log(f"wrote {out} at step {step + 1}")
    return out


@torch.no_grad()
def composition_scores(model, pairs, scorer, n: int = 8, seed: int = 0, steps: int = 20, guidance: float = 3.0) -> dict:
    """The base model on "a <shape> in <style> style" for each (shape, style) in `pairs`, `n` samples each:
    the world encoder's mean P(shape), P(style) and argmax accuracies, overall and per pair."""
    per_pair = {}
    for k, (sh, st) in enumerate(pairs):
        imgs = generate(model, [scenes.prompt_for(sh, st)] * n, seed=seed * 1000 + k, steps=steps, guidance=guidance)
        _, _, ps, pt = scorer.embed(imgs)
        i, j = scenes.SHAPES.index(sh), list(scenes.STYLES).index(st)
        per_pair[f"{sh}/{st}"] = {"p_shape": float(ps[:, i].mean()), "p_style": float(pt[:, j].mean()),
                                  "shape_acc": float((ps.argmax(1) == i).float().mean()),
                                  "style_acc": float((pt.argmax(1) == j).float().mean())}
    keys = ("p_shape", "p_style", "shape_acc", "style_acc")
    return {**{k: sum(v[k] for v in per_pair.values()) / len(per_pair) for k in keys}, "per_pair": per_pair}


def sample_sheet(model, path, seed: int = 0, steps: int = 24, guidance: float = 3.0) -> torch.Tensor:
    """One sample per (seen style row, seen shape column) of "a <shape> in <style> style"; writes a PNG."""
    prompts = [scenes.prompt_for(sh, st) for st in scenes.SEEN_STYLES for sh in scenes.SEEN_SHAPES]
    imgs = generate(model, prompts, seed=seed, steps=steps, guidance=guidance)
    scenes.save_png(scenes.image_grid(imgs, len(scenes.SEEN_SHAPES), scale=3), path)
    return imgs


if __name__ == "__main__":
    # python -m qr_core.world.model OUT.png: the shipped model's sample sheet;
    # python -m qr_core.world.model composition [MODEL]: its P(shape), P(style) on the held-out pairs (8 samples each)
    torch.set_num_threads(1)
    if sys.argv[1:2] == ["composition"]:
        from .encoder import Scorer

        model, meta = load_world_model(sys.argv[2] if len(sys.argv) > 2 else ASSET)
        t0 = time.perf_counter()
        res = composition_scores(model, scenes.HELD_OUT_PAIRS, Scorer(), n=8)
        print(json.dumps({"steps": meta.get("steps"), "held_out_pairs_in_pretraining":
                          "held_out_pairs" not in json.loads(meta.get("world", "{}")),
                          "seconds": round(time.perf_counter() - t0, 1), **res}, indent=1))
    else:
        sample_sheet(load_world_model()[0], sys.argv[1] if len(sys.argv) > 1 else "world_model_samples.png")


def save_resume_state(path: Path, model: torch.nn.Module, ema: dict, opt: torch.optim.Optimizer, step: int,
                      seconds: float) -> None:
    """Model, EMA and optimizer state as one safetensors file (no pickles: the optimizer's
    per-parameter tensors are flattened to `opt.<index>.<name>`, its param groups go to the metadata)."""
    opt_state = opt.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.items()})
    for index, state in opt_state["state"].items():
        tensors.update({f"opt.{index}.{name}": torch.as_tensor(v) for name, v in state.items()})
    atomic_save(tensors, path, {"step": str(step), "seconds": f"{seconds:.1f}",
                                "param_groups": json.dumps(opt_state["param_groups"])})


def load_resume_state(path: Path, model: torch.nn.Module, ema: dict, opt: torch.optim.Optimizer) -> tuple[int, float]:
    """Restore what save_resume_state wrote; returns (step, seconds trained so far)."""
    tensors, meta = load_tensors(path)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.update({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, index, name = k.split(".", 2)
            state.setdefault(int(index), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), float(meta["seconds"])
