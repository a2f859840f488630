"""Pretrain the world's text-to-image flow model and write qr_core/world/assets/world_model.safetensors.

    python tools/pretrain_world_model.py --steps 10000 --decay-start 7000 --lr 1e-3 --warmup 200 --ema 0.998 \
        --seed 0 --threads 2 --sample-every 1000    # world v3's run, 17 min on 2 cores (bench/results/world_model.md)

Resumable: rerunning continues from `<out>.ckpt` (safetensors, not committed). The EMA
weights at the last step are written to --out with the command, the machine,
the steps and the seed in the safetensors metadata (float16). The held-out
shape×style pairs (`scenes.HELD_OUT_PAIRS`) never appear in the data; every
--sample-every steps a sample grid of them is written next to --out and the
log prints the world encoder's P(shape) and P(style) on them (composition).
Constant LR until --decay-start: a run can be resumed with a smaller --steps
and --decay-start at the step reached to decay from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from qr_core.world.model import ASSET, WORLD_CONFIG, PretrainSettings, pretrain


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = PretrainSettings()
    p.add_argument("--out", default=str(ASSET))
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--ema", type=float, default=d.ema)
    p.add_argument("--decay-start", type=int, default=d.decay_start,
                   help="constant LR until this step, then linear decay to 0 at --steps (0: no decay)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--sample-every", type=int, default=500)
    p.add_argument("--patch", type=int, default=WORLD_CONFIG.patch, help="pixels per token side (the shipped model's)")
    p.add_argument("--hidden", type=int, default=WORLD_CONFIG.hidden, help="model width (the shipped model's)")
    p.add_argument("--depth", type=int, default=WORLD_CONFIG.depth, help="double-stream blocks (the shipped model's)")
    p.add_argument("--depth-single", type=int, default=WORLD_CONFIG.depth_single,
                   help="single-stream blocks (the shipped model's)")
    p.add_argument("--init", default=None,
                   help="start from this world model file's weights (same config; fresh optimizer, step 0)")
    a = p.parse_args(argv)
    s = PretrainSettings(a.steps, a.batch, a.lr, a.warmup, a.ema, a.decay_start, a.seed, a.threads)
    args = list(argv if argv is not None else sys.argv[1:])
    # the output path is this machine's, not part of the recipe: drop "--out X" and "--out=X"
    kept = [x for i, x in enumerate(args) if not x.startswith("--out") and not (i and args[i - 1] == "--out")]
    command = "python tools/pretrain_world_model.py " + " ".join(shlex.quote(x) for x in kept)
    config = dataclasses.replace(WORLD_CONFIG, patch=a.patch, hidden=a.hidden, depth=a.depth,
                                 depth_single=a.depth_single)
    pretrain(a.out, s, config=config, sample_every=a.sample_every, command=command,
             log=lambda m: print(m, flush=True), init=a.init)


if __name__ == "__main__":
    main()
