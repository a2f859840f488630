"""λ per block: named block groups per architecture and the "input=1.0, middle=0.5" profiles over them.

A block profile multiplies the global λ of one ΔR (or LoRA) target by target: a target's factor is that
of the most specific entry naming it (`double.1` before `double`), 1 where none does. Because it only
rescales ΔR per target, a per-block merge is still W + Q·Σ λᵢ mᵢ(target) ΔRᵢ: exact, and exported as a
standard LoRA like any other merge.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Mapping

import torch

from ..adapters.delta import QRDelta
from ..errors import SettingError
from ..targets import TargetSet


@dataclass(frozen=True)
class BlockGroup:
    """Targets whose key matches `pattern` (group 1: the block index), optionally only a slice of the depth.

    `depth` = (lo, hi): the blocks with lo ≤ index / count < hi, count = how many blocks `pattern` finds in
    the model (SD3's joint blocks have no named stages, so thirds of the depth stand in for them).
    """

    name: str
    pattern: str
    depth: tuple[float, float] | None = None
    help: str = ""


_UNET = (BlockGroup("input", r"^input_blocks\.(\d+)\.", help="the UNet's down path"),
         BlockGroup("middle", r"^middle_block\.(\d+)\.", help="the UNet's bottleneck"),
         BlockGroup("output", r"^output_blocks\.(\d+)\.", help="the UNet's up path"))
_JOINT = r"^joint_blocks\.(\d+)\."


def _thirds(pattern: str, what: str) -> tuple[BlockGroup, ...]:
    """early / middle / late thirds of one stack of blocks without named stages."""
    return (BlockGroup("early", pattern, (0.0, 1 / 3), f"the first third of {what}"),
            BlockGroup("middle", pattern, (1 / 3, 2 / 3), f"the middle third of {what}"),
            BlockGroup("late", pattern, (2 / 3, 1.0), f"the last third of {what}"))


_FLUX = (BlockGroup("double", r"^double_blocks\.(\d+)\.", help="the double-stream (image + text) blocks"),
         BlockGroup("single", r"^single_blocks\.(\d+)\.", help="the single-stream blocks"))
# The architectures of targets.ARCHITECTURES (the world model is FLUX-layout: 2 double + 2 single blocks).
BLOCK_GROUPS: dict[str, tuple[BlockGroup, ...]] = {
    "sd15": _UNET,
    "sdxl": _UNET,
    "sd3": _thirds(_JOINT, "the joint blocks"),
    "flux": _FLUX,
    "flux2": _FLUX,
    "chroma": _FLUX,
    "qwen_image": _thirds(r"^transformer_blocks\.(\d+)\.", "the dual-stream blocks"),
    "lumina2": (BlockGroup("refiners", r"^(?:noise|context)_refiner\.(\d+)\.",
                           help="the one-stream refiners before the joint layers (image and text)"),
                *_thirds(r"^layers\.(\d+)\.", "the joint layers")),
    "hidream": (BlockGroup("double", r"^double_stream_blocks\.(\d+)\.", help="the dual-stream blocks"),
                BlockGroup("single", r"^single_stream_blocks\.(\d+)\.", help="the single-stream blocks")),
    "wan": _thirds(r"^blocks\.(\d+)\.", "the video blocks"),
    "longcat": _FLUX,
    "ovis": _FLUX,
    "mage_flow": _thirds(r"^transformer_blocks\.(\d+)\.", "the dual-stream blocks"),
    "ernie": _thirds(r"^layers\.(\d+)\.", "the single-stream layers"),
    "krea2": (BlockGroup("text", r"^txtfusion\.(?:layerwise|refiner)_blocks\.(\d+)\.",
                         help="the text-fusion blocks before the joint blocks (text only)"),
              *_thirds(r"^blocks\.(\d+)\.", "the single-stream blocks")),
    "anima": _thirds(r"^blocks\.(\d+)\.", "the DiT blocks"),
    "ltx2": _thirds(r"^transformer_blocks\.(\d+)\.", "the audio+video blocks"),
}


def groups_for(arch: str) -> tuple[BlockGroup, ...]:
    if arch not in BLOCK_GROUPS:
        raise SettingError(f"λ per block knows the block groups of {', '.join(BLOCK_GROUPS)}, not of {arch!r}; "
                           "leave the block profile empty for this model.")
    return BLOCK_GROUPS[arch]


def describe_groups(arch: str) -> str:
    """One line naming an architecture's groups, for tooltips and errors."""
    return "; ".join(f"{g.name} ({g.help})" for g in groups_for(arch))


def _syntax_help(arch: str) -> str:
    names = [g.name for g in groups_for(arch)]
    return (f"write 'group=factor' pairs separated by commas, e.g. '{names[0]}=1.0, {names[-1]}=0.5' "
            f"(a group's block n alone: '{names[0]}.0=0.8'). {arch} groups: {describe_groups(arch)}")


def parse_block_profile(text: str, arch: str) -> dict[str, float]:
    """'input=1.0, middle=0.5' → {'input': 1.0, 'middle': 0.5}; '' → {} (every block at the global λ)."""
    text = (text or "").strip()
    if not text:
        return {}
    valid = {g.name for g in groups_for(arch)}
    out: dict[str, float] = {}
    for part in re.split(r"[,;\n]", text):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        try:
            factor = float(value) if eq else None
        except ValueError:
            factor = None
        if factor is None:
            raise SettingError(f"block profile {text!r}: cannot read {part!r}; {_syntax_help(arch)}.")
        group, _, index = name.partition(".")
        if group not in valid or (index and not index.isdigit()):
            raise SettingError(f"block profile {text!r}: unknown block {name!r}; {_syntax_help(arch)}.")
        if name in out:
            raise SettingError(f"block profile {text!r} names {name!r} twice; give each block one factor.")
        out[name] = factor
    return out


def _block_counts(targets: TargetSet, groups: tuple[BlockGroup, ...]) -> dict[str, int]:
    counts = {}
    for pattern in {g.pattern for g in groups}:
        indices = {int(m.group(1)) for k in targets.shapes if (m := re.match(pattern, k))}
        indices |= {int(m.group(1)) for t in targets if (m := re.match(pattern, t.key))}
        counts[pattern] = max(indices) + 1 if indices else 0
    return counts


def target_block(key: str, arch: str, counts: Mapping[str, int]) -> tuple[str, int] | None:
    """(group, block index) of a weight key, or None for keys outside every group (e.g. FLUX's final layer)."""
    for g in groups_for(arch):
        m = re.match(g.pattern, key)
        if not m:
            continue
        index = int(m.group(1))
        if g.depth is None or g.depth[0] <= index / max(counts[g.pattern], 1) < g.depth[1]:
            return g.name, index
    return None


def block_factors(targets: TargetSet, profile: Mapping[str, float]) -> dict[str, float]:
    """Target name → factor of the profile (1.0 where the profile does not name the target's block)."""
    if not profile:
        return {t.name: 1.0 for t in targets}
    groups = groups_for(targets.arch)
    counts = _block_counts(targets, groups)
    where = {t.name: target_block(t.key, targets.arch, counts) for t in targets}
    found = {w for w in where.values() if w is not None}
    for name in profile:
        group, _, index = name.partition(".")
        if index and (group, int(index)) not in found:
            have = sorted(i for g, i in found if g == group)
            raise SettingError(f"block profile names {name!r}, but this model's {group!r} group has "
                               f"{'blocks ' + ', '.join(map(str, have)) if have else 'no adapted block'}.")
    out = {}
    for t in targets:
        factor = 1.0
        if where[t.name] is not None:
            group, index = where[t.name]
            factor = profile.get(f"{group}.{index}", profile.get(group, 1.0))
        out[t.name] = factor
    return out


def scaled_by_blocks(delta: QRDelta, profile: Mapping[str, float]) -> QRDelta:
    """`delta` with each target's ΔR multiplied by its block's factor (the same object when the profile is empty)."""
    if not profile:
        return delta
    factors = block_factors(delta.targets, profile)
    scaled = {n: d if factors[n] == 1.0 else d * factors[n] for n, d in delta.delta.items()}
    # The name carries the profile, so a merge's summary and an exported LoRA's `qr_lora_merge` sources record it.
    named = f"{delta.name or 'ΔR'} [blocks " + ", ".join(f"{k}={v:g}" for k, v in profile.items()) + "]"
    return dataclasses.replace(delta, delta=scaled, name=named)


def scaled_updates(updates: Mapping[str, torch.Tensor], targets: TargetSet,
                   profile: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Dense per-target updates (e.g. an ordinary LoRA's BA) scaled by block, as `scaled_by_blocks` does ΔR."""
    factors = block_factors(targets, profile)
    return {n: u if factors.get(n, 1.0) == 1.0 else u * factors[n] for n, u in updates.items()}
