"""QR-LoRA λ Grid: value parsing, the labelled layout, and a real run on a tiny model."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.sd
import comfy.utils
import nodes
from comfy.cli_args import LatentPreviewMethod, args

import test_comfyui_newer_models as newer
from comfy_env import decompose, latent_and_cond, random_delta, tiny_model
from test_comfyui_merge import merge_node


def test_parse_values(pack):
    parse = pack.module("nodes.services.lambda_grid").parse_values
    assert parse("0.5, 0.75,1.0", "x") == [0.5, 0.75, 1.0]
    assert parse("0.5:1.0:0.1", "x") == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    with pytest.raises(ValueError, match="commas"):
        parse("half", "lambda_content_values")
    with pytest.raises(ValueError, match="no λ"):
        parse(" , ", "x")


def test_label_grid_places_cells_row_major_with_margins(pack):
    label_grid = pack.module("nodes.services.lambda_grid").label_grid
    cells = torch.stack([torch.full((24, 32, 3), v) for v in (0.0, 0.25, 0.5, 0.75, 1.0, 0.1)])
    grid = label_grid(cells, [0.5, 1.0], [0.5, 0.75, 1.0])
    assert grid.shape[0] == 1 and grid.shape[-1] == 3
    _, h, w, _ = grid.shape
    top, left = h - 2 * 24, w - 3 * 32
    assert top > 0 and left > 0  # label margins
    # cell (row 1, col 2) is the 6th image
    assert torch.allclose(grid[0, top + 24 + 12, left + 64 + 16], torch.tensor([0.1] * 3), atol=1 / 255)
    assert torch.allclose(grid[0, top + 12, left + 16], torch.tensor([0.0] * 3), atol=1 / 255)


def test_grid_corner_says_which_cfg_it_sampled_with(pack):
    grid_module = pack.module("nodes.services.lambda_grid")
    assert grid_module.cfg_caption(0.0, 1.0) == "cfg 1 (the model's own)"
    assert grid_module.cfg_caption(4.5, 4.5) == "cfg 4.5"
    cells = torch.ones(2, 64, 64, 3)  # white cells: only the labels are dark
    plain = grid_module.label_grid(cells, [0.5], [0.5, 1.0])
    captioned = grid_module.label_grid(cells, [0.5], [0.5, 1.0], caption="cfg 1 (the model's own)")
    assert captioned.shape[1] > plain.shape[1]  # a taller margin for the third corner line

    def margin_ink(grid):  # dark pixels left of the cells: the corner and the row labels
        return int((grid[0, :, : grid.shape[2] - 2 * 64] < 0.5).sum())

    assert margin_ink(captioned) > margin_ink(plain)


def test_grid_runs_every_cell_with_one_seed(pack):
    model = tiny_model("sd15")
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    content = random_delta(pack, basis, 1, "content", scale=0.5)
    style = random_delta(pack, basis, 2, "style", scale=0.5)
    latent, cond = latent_and_cond("sd15")
    latent = {"samples": torch.zeros_like(latent["samples"])}
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # ComfyUI's own identity VAE
    with torch.inference_mode():
        out = pack.node("QRLoRALambdaGrid").execute(model, content, style, cond, cond, latent, vae, "0, 1", "0.5",
                                                    7, 2, 1.0, "euler", "normal")
    grid, cells = out[0], out[1]
    assert cells.shape[0] == 2 and grid.shape[0] == 1
    assert not torch.equal(cells[0], cells[1]), "λc 0 and 1 gave the same image"
    assert not model.patches, "the grid left a patch on the input model"
    again = pack.node("QRLoRALambdaGrid").execute(model, content, style, cond, cond, latent, vae, "0", "0.5",
                                                  7, 2, 1.0, "euler", "normal")[1]
    assert torch.allclose(again[0], cells[0], atol=1e-5), "same seed and λ, different image"


def test_grid_refuses_too_many_cells(pack):
    model = tiny_model("sd15")
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    d = random_delta(pack, basis, 1, "d")
    latent, cond = latent_and_cond("sd15")
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="at most"):
        pack.node("QRLoRALambdaGrid").execute(model, d, d, cond, cond, latent, vae, "0:1:0.1", "0:1:0.1",
                                              0, 1, 1.0, "euler", "normal")


def identity_vae():
    with torch.inference_mode():
        return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # ComfyUI's own identity VAE


def grid_and_ksampler(pack, model, cond, latent, lc=0.7, ls=0.4, seed=5, steps=2):
    """One grid cell, and KSampler → VAE Decode of the same latent on Merge's model at the same λ (first image)."""
    basis = decompose(pack, model)
    content = random_delta(pack, basis, 1, "content", scale=0.5)
    style = random_delta(pack, basis, 2, "style", scale=0.5)
    vae = identity_vae()
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        cell = pack.node("QRLoRALambdaGrid").execute(model, content, style, cond, cond, latent, vae, f"{lc}", f"{ls}",
                                                     seed, steps, 1.0, "euler", "normal")[1]
        merged = merge_node(pack, model, content, style, lc, ls)
        sampled = nodes.KSampler().sample(merged, seed, steps, 1.0, "euler", "normal", cond, cond, latent)[0]
        image = nodes.VAEDecode().decode(vae, sampled)[0]
    return cell, image[:1, ..., :3]


@pytest.mark.parametrize("name", ["sd15", "flux2", "wan22"])
def test_grid_cell_is_what_ksampler_samples_from_the_empty_latent(pack, name):
    """Core's Empty Latent Image (8 pixels a latent) on FLUX.2 and Wan 2.2 (16): ComfyUI from 0.33 resizes it
    for KSampler by the latent's ratio, so the grid must too, or its cells come out at twice the size."""
    if name == "sd15":
        model, (_, cond) = tiny_model(name), latent_and_cond(name)
    else:
        model, (_, cond) = newer.tiny(name), newer.latent_and_cond(name)
    latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    cell, ksampler = grid_and_ksampler(pack, model, cond, latent)
    assert cell.shape == ksampler.shape
    assert torch.allclose(cell, ksampler, atol=1e-5), float((cell - ksampler).abs().max())


def test_grid_cell_keeps_ksamplers_batch_index_noise_and_noise_mask(pack):
    """A latent picked from a batch (Latent From Batch: its own noise of the batch) with a noise mask (inpainting)."""
    model = tiny_model("sd15")
    latents, cond = latent_and_cond("sd15", batch=3)
    with torch.inference_mode():
        picked = nodes.LatentFromBatch().frombatch(latents, 1, 1)[0]
        mask = torch.zeros(64, 64)
        mask[:, 32:] = 1.0
        latent = nodes.SetLatentNoiseMask().set_mask(picked, mask)[0]
    assert latent["batch_index"] == [1]
    cell, ksampler = grid_and_ksampler(pack, model, cond, latent)
    assert torch.allclose(cell, ksampler, atol=1e-5), float((cell - ksampler).abs().max())
    with torch.inference_mode():
        unsampled = nodes.VAEDecode().decode(identity_vae(), picked)[0][0, ..., :3]
    assert torch.allclose(cell[0, :, :4], unsampled[:, :4], atol=1e-5)  # outside the mask: the latent as it was
    assert not torch.allclose(cell[0, :, 4:], unsampled[:, 4:], atol=1e-2)


def test_grid_progress_is_one_bar_over_every_cell_with_cores_previews(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    d = random_delta(pack, basis, 1, "d")
    latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    _, cond = latent_and_cond("sd15")
    shown = []

    def hook(value, total, preview, node_id=None):
        shown.append((value, total, None if preview is None else (preview[0], preview[1].size)))

    old_hook, old_method = comfy.utils.PROGRESS_BAR_HOOK, args.preview_method
    comfy.utils.PROGRESS_BAR_HOOK, args.preview_method = hook, LatentPreviewMethod.Latent2RGB  # --preview-method
    try:
        with torch.inference_mode():
            pack.node("QRLoRALambdaGrid").execute(model, d, d, cond, cond, latent, identity_vae(), "0, 1", "0.5",
                                                  0, 3, 1.0, "euler", "normal")
    finally:
        comfy.utils.PROGRESS_BAR_HOOK, args.preview_method = old_hook, old_method
    assert [s[:2] for s in shown] == [(i, 6) for i in range(1, 7)]
    assert all(s[2] == ("JPEG", (8, 8)) for s in shown)  # core's latent-to-RGB preview of each step's x0
