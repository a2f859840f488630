"""The machine a benchmark or an asset was made on, recorded next to its figures."""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import torch


def machine_info(device: str | torch.device = "cpu") -> dict:
    """CPU, cores, memory, GPU, versions, and `slug` (e.g. cpu-2core, cuda-nvidia-h200) for file names."""
    device = torch.device(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    info = {"cpu": cpu, "cores": cores, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "device": str(device),
            "gpu": None}
    try:
        info["mem_total_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_mem_gb=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
        info["slug"] = "cuda-" + re.sub(r"[^a-z0-9]+", "-", p.name.lower()).strip("-")
    else:
        info["slug"] = f"cpu-{cores}core"
    return info


def describe_machine() -> str:
    """One line for a results file or an asset's metadata."""
    info = machine_info()
    return (f"{info['platform']}, {info['cpu']}, {info['cores']} logical CPUs, torch {info['torch']}, "
            f"python {sys.version.split()[0]}")
