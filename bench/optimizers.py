"""Train ΔR's optimizers side by side: AdamW (the baseline), AdamW 8-bit (bitsandbytes), Prodigy (prodigyopt).

Each optimizer trains the same parameters (one r×r ΔR per target, as Train ΔR trains them) on the same
fixed least-squares loss through qr_core's own loop, in one run: time per optimizer step, the optimizer
state's bytes and the final loss. An optimizer whose package is missing or that cannot run on the device is
reported with the reason (AdamW 8-bit needs CUDA). Results: `<out-dir>/optimizers-<machine>.json` and `.md`.

    python bench/optimizers.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

PACK_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR))

from qr_core.errors import RuntimeSupportError  # noqa: E402
from qr_core.machine import machine_info  # noqa: E402
from qr_core.training.loop import OPTIMIZERS, TrainSettings, train  # noqa: E402

LEARNING_RATES = {"adamw": 1e-3, "adamw8bit": 1e-3, "prodigy": 1.0}  # Prodigy: lr scales its own estimate


def run(optimizer: str, opts) -> dict:
    g = torch.Generator().manual_seed(0)
    targets = [torch.randn(opts.rank, opts.rank, generator=g).to(opts.device) for _ in range(opts.targets)]
    params = [torch.nn.Parameter(torch.zeros(opts.rank, opts.rank, device=opts.device)) for _ in targets]
    settings = TrainSettings(steps=opts.steps, lr=LEARNING_RATES[optimizer], optimizer=optimizer)
    holder = {}

    def loss_fn(step: int) -> torch.Tensor:
        return sum((p - t).square().mean() for p, t in zip(params, targets)) / len(params)

    try:
        result = train(params, loss_fn, settings, on_state=lambda capture: holder.update(capture=capture))
    except RuntimeSupportError as e:
        return {"optimizer": OPTIMIZERS[optimizer], "skipped": str(e)}
    state = holder["capture"]().optimizer["state"]
    state_bytes = sum(v.numel() * v.element_size() for s in state.values() for v in s.values()
                      if isinstance(v, torch.Tensor))
    return {"optimizer": OPTIMIZERS[optimizer], "ms_per_step": 1000 * result.seconds / opts.steps,
            "state_bytes": state_bytes, "param_bytes": sum(p.numel() * 4 for p in params),
            "first_loss": result.losses[0], "final_loss": result.losses[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--targets", type=int, default=280, help="ΔR count (about SDXL's paper preset)")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out-dir", default=str(PACK_DIR / "bench" / "results"))
    opts = ap.parse_args()
    results = [run(o, opts) for o in ("adamw", "adamw8bit", "prodigy")]
    for r in results:
        print(json.dumps(r), flush=True)
    machine = machine_info(opts.device)["slug"]
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "settings": {k: v for k, v in vars(opts).items() if k != "out_dir"},
            "results": results}
    (out / f"optimizers-{machine}.json").write_text(json.dumps(meta, indent=2) + "\n")
    lines = [f"# Optimizers: {machine}", "", f"{opts.targets} ΔR of {opts.rank}×{opts.rank}, {opts.steps} steps, "
             "one least-squares loss; AdamW is the baseline.", "",
             "| optimizer | ms/step | optimizer state | final loss |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['optimizer']} | " + (f"skipped: {r['skipped']} | | |" if "skipped" in r else
                     f"{r['ms_per_step']:.2f} | {r['state_bytes'] / 2**20:.1f} MiB | {r['final_loss']:.4g} |"))
    (out / f"optimizers-{machine}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
