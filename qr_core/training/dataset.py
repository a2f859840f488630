"""A training set of latents and their conditionings, as ComfyUI's list inputs deliver it, batched by size.

ComfyUI's dataset nodes (0.8: MakeTrainingDataset, LoadTrainingDataset,
ResolutionBucket) output lists: one latent batch and one conditioning per
item. A conditioning is opaque here (ComfyUI's list of [tensor, options]
entries); what matters is how many entries it has: one entry is shared by
every image of its latent batch, one entry per image pairs them in order.
Images of one size form a bucket: a training step draws its images from one
bucket, so every batch stacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..errors import SettingError


@dataclass
class Bucket:
    """Images of one size: latents [B, …] and, per image, the index of its conditioning entry."""

    latents: torch.Tensor
    conds: list[int] = field(default_factory=list)


@dataclass
class Dataset:
    buckets: list[Bucket]
    conds: list[Any]  # the distinct conditioning entries, in order; a bucket refers to them by index

    @property
    def images(self) -> int:
        return sum(b.latents.shape[0] for b in self.buckets)

    def sizes(self) -> list[tuple[int, ...]]:
        return [tuple(b.latents.shape[1:]) for b in self.buckets]


def pair_dataset(latents: Sequence[torch.Tensor], conditionings: Sequence[Sequence[Any]]) -> Dataset:
    """Pair each image with its conditioning entry and group the images by size.

    `latents`: one tensor [B_i, …] per list item; `conditionings`: one per
    item (entries: 1, shared by the item's images, or B_i, one each), or a
    single conditioning for the whole list (1 entry, or one per image).
    """
    if not latents:
        raise SettingError("no latent was given: connect a LATENT (a VAE-encoded image or batch) or a dataset list.")
    counts = [int(x.shape[0]) for x in latents]
    total = sum(counts)
    if len(conditionings) == len(latents):
        per_item = [list(c) for c in conditionings]
    elif len(conditionings) == 1:
        only = list(conditionings[0])
        if len(only) == 1:
            per_item = [only] * len(latents)
        elif len(only) == total:
            starts = [sum(counts[:i]) for i in range(len(counts))]
            per_item = [only[s:s + n] for s, n in zip(starts, counts)]
        else:
            raise SettingError(f"one conditioning with {len(only)} entries for {total} images: give one entry "
                               f"(shared by all images) or {total} (one per image, in order).")
    else:
        raise SettingError(f"{len(conditionings)} conditionings for {len(latents)} latents: give one conditioning, "
                           "or one per latent (as ComfyUI's dataset nodes output them).")
    entries: list[Any] = []
    index_of: dict[int, int] = {}  # id(entry) → index: a shared entry is processed once
    by_size: dict[tuple[int, ...], tuple[list[torch.Tensor], list[int]]] = {}
    for item, (batch, conds) in enumerate(zip(latents, per_item)):
        if len(conds) not in (1, batch.shape[0]):
            raise SettingError(f"latent {item + 1} holds {batch.shape[0]} images but its conditioning has "
                               f"{len(conds)} entries: give 1 (shared) or {batch.shape[0]} (one per image).")
        for i in range(batch.shape[0]):
            entry = conds[i if len(conds) > 1 else 0]
            if id(entry) not in index_of:
                index_of[id(entry)] = len(entries)
                entries.append(entry)
            images, cond_ids = by_size.setdefault(tuple(batch.shape[1:]), ([], []))
            images.append(batch[i])
            cond_ids.append(index_of[id(entry)])
    buckets = [Bucket(torch.stack(images), cond_ids) for images, cond_ids in by_size.values()]
    return Dataset(buckets, entries)
