"""Train ΔR on ComfyUI's dataset lists: several images of several sizes, one caption each, in one run."""

from __future__ import annotations

import asyncio

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import execution

from comfy_env import TRAIN_DEFAULTS, decompose, tiny_model

# Three images, two sizes, three captions. Each image's latent has a mean of its own sign and size, each
# caption a constant context of its own value: what the model's forward receives names the pair.
IMAGES = {"A": (8, +40.0, 1.0), "B": (8, -40.0, 2.0), "C": (16, +40.0, 3.0)}


def dataset_lists():
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():  # as VAE Encode and CLIP Text Encode make them
        latents = [{"samples": mean + torch.randn(1, 4, size, size, generator=g)} for size, mean, _ in IMAGES.values()]
        conds = [[[torch.full((1, 6, 32), value), {}]] for _, _, value in IMAGES.values()]
    return latents, conds


def recording(model):
    """A clone of `model` that records, per forward, (latent size, sign of the input's mean, caption value)."""
    seen = []

    def record(apply_model, args):
        x, context = args["input"], args["c"]["c_crossattn"]
        for i in range(x.shape[0]):
            seen.append((x.shape[-1], 1.0 if float(x[i].mean()) > 0 else -1.0, float(context[i].mean())))
        return apply_model(args["input"], args["timestep"], **args["c"])

    clone = model.clone()
    clone.set_model_unet_function_wrapper(record)
    return clone, seen


def run_as_the_executor(pack, model, basis, latents, conds, **overrides):
    """Train ΔR called the way ComfyUI's executor calls a node: every input a list (here with several items)."""
    cls = pack.node("QRLoRATrainDelta")
    inputs = {"model": [model], "basis": [basis], "latent": latents, "positive": conds}
    inputs.update({k: [v] for k, v in dict(TRAIN_DEFAULTS, **overrides).items()})
    with torch.inference_mode():
        results = asyncio.run(execution._async_map_node_over_list("test", "1", cls, inputs, cls.FUNCTION))
    return results


def expected_pairs():
    return {(size, 1.0 if mean > 0 else -1.0, value) for size, mean, value in IMAGES.values()}


def test_three_images_of_two_sizes_with_three_captions_train_once_and_stay_paired(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    latents, conds = dataset_lists()
    recorded, seen = recording(model)
    results = run_as_the_executor(pack, recorded, basis, latents, conds, steps=12, batch_size=2)
    assert len(results) == 1  # one run for the whole list, not one per image
    out = results[0]
    assert len(out[2]["loss"]) == 12
    assert out[0].training["images"] == 3 and out[0].training["image_sizes"] == [[4, 8, 8], [4, 16, 16]]
    assert set(seen) == expected_pairs()  # every image seen, and only ever with its own caption
    assert "3 image(s) in 2 size(s)" in out.ui["text"][0]


def test_resolution_buckets_of_comfyui_train_the_same_pairs(pack):
    try:
        from comfy_extras.nodes_dataset import ResolutionBucket as bucket
    except ImportError:
        pytest.skip("ComfyUI 0.3.64 has no dataset nodes (ResolutionBucket came with 0.8)")
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    latents, conds = dataset_lists()
    with torch.inference_mode():
        bucketed = bucket.execute(latents=latents, conditioning=conds)
    bucket_latents, bucket_conds = bucketed[0], bucketed[1]
    assert [x["samples"].shape[0] for x in bucket_latents] == [2, 1]  # ComfyUI's own grouping: A+B, C
    recorded, seen = recording(model)
    results = run_as_the_executor(pack, recorded, basis, bucket_latents, bucket_conds, steps=12)
    assert len(results) == 1 and len(results[0][2]["loss"]) == 12
    assert set(seen) == expected_pairs()


def test_mismatched_dataset_lists_are_refused(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    latents, conds = dataset_lists()
    with pytest.raises(ValueError, match="2 conditionings for 3 latents"):
        run_as_the_executor(pack, model, basis, latents, conds[:2], steps=1)
    with pytest.raises(ValueError, match="received 2 different values"):
        cls = pack.node("QRLoRATrainDelta")
        cls.execute(model, basis, latents, conds, **dict(TRAIN_DEFAULTS, steps=[1, 2]))
