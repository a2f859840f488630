"""QR-LoRA λ Grid: value parsing, the labelled layout, and a real run on a tiny model."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.sd

from comfy_env import latent_and_cond, random_delta, tiny_model


def test_parse_values(pack):
    parse = pack.module("nodes.grid_node").parse_values
    assert parse("0.5, 0.75,1.0", "x") == [0.5, 0.75, 1.0]
    assert parse("0.5:1.0:0.1", "x") == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    with pytest.raises(ValueError, match="commas"):
        parse("half", "lambda_content_values")
    with pytest.raises(ValueError, match="no λ"):
        parse(" , ", "x")


def test_label_grid_places_cells_row_major_with_margins(pack):
    label_grid = pack.module("nodes.grid_node").label_grid
    cells = torch.stack([torch.full((24, 32, 3), v) for v in (0.0, 0.25, 0.5, 0.75, 1.0, 0.1)])
    grid = label_grid(cells, [0.5, 1.0], [0.5, 0.75, 1.0])
    assert grid.shape[0] == 1 and grid.shape[-1] == 3
    _, h, w, _ = grid.shape
    top, left = h - 2 * 24, w - 3 * 32
    assert top > 0 and left > 0  # label margins
    # cell (row 1, col 2) is the 6th image
    assert torch.allclose(grid[0, top + 24 + 12, left + 64 + 16], torch.tensor([0.1] * 3), atol=1 / 255)
    assert torch.allclose(grid[0, top + 12, left + 16], torch.tensor([0.0] * 3), atol=1 / 255)


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
