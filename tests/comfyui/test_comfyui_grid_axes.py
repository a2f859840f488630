"""The λ Grid's other row axes: schedules (through the weight hooks) and block profiles, against the plain grid."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.sd

from comfy_env import latent_and_cond, random_delta, tiny_model


@pytest.fixture(scope="module")
def setup(pack):
    model = tiny_model("sd15")
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    content = random_delta(pack, basis, 1, "content", scale=0.5)
    style = random_delta(pack, basis, 2, "style", scale=0.5)
    latent, cond = latent_and_cond("sd15")
    latent = {"samples": torch.zeros_like(latent["samples"])}
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # ComfyUI's own identity VAE
    return model, content, style, cond, latent, vae


def grid(pack, setup, lc_values, ls_values, **axis):
    model, content, style, cond, latent, vae = setup
    with torch.inference_mode():
        return pack.node("QRLoRALambdaGrid").execute(model, content, style, cond, cond, latent, vae, lc_values,
                                                     ls_values, 7, 3, 1.5, "euler", "normal", **axis)


def test_schedule_rows_sample_through_the_hooks(pack, setup):
    plain = grid(pack, setup, "0, 1", "0.5")[1]
    rows = grid(pack, setup, "1", "0.5", row_axis="schedule", row_values="constant | 0: 0, 1 | style-late")[1]
    assert rows.shape[0] == 3
    assert torch.allclose(rows[0], plain[1], atol=1e-4), "schedule 'constant' at λc 1 is not the plain λc 1 cell"
    assert torch.allclose(rows[1], plain[0], atol=1e-4), "a content factor of 0 throughout is not the λc 0 cell"
    assert not torch.allclose(rows[2], rows[0], atol=1e-4), "style-late sampled like constant"
    assert not setup[0].patches, "the grid left a patch on the input model"


def test_block_profile_rows(pack, setup):
    plain = grid(pack, setup, "0, 1", "0.5")[1]
    rows = grid(pack, setup, "1", "0.5", row_axis="content_block_profile",
                row_values="input=1 | input=0, middle=0, output=0 | output=0")[1]
    assert torch.allclose(rows[0], plain[1], atol=1e-5) and torch.allclose(rows[1], plain[0], atol=1e-5)
    assert not torch.allclose(rows[2], rows[0], atol=1e-5)
    fixed = grid(pack, setup, "1", "0.5", block_lambda_content="input=0, middle=0, output=0")[1]
    assert torch.allclose(fixed[0], plain[0], atol=1e-5), "a fixed content profile of 0 everywhere is not λc 0"


@pytest.mark.parametrize("lc,axis,values,error,match", [
    ("0.5, 1", "schedule", "constant", ValueError, "the one λc of every row"),
    ("1", "schedule", "", ValueError, "give the rows in row_values"),
    ("1", "schedule", "constant | sometimes", "SettingError", "choose one of constant"),
    ("1", "style_block_profile", "inputs=1", "SettingError", "unknown block 'inputs'"),
    ("1", "diagonal", "x", ValueError, "row_axis = 'diagonal' is not an option"),
])
def test_bad_row_axes(pack, setup, lc, axis, values, error, match):
    error = pack.module("qr_core").SettingError if error == "SettingError" else error
    with pytest.raises(error, match=match):
        grid(pack, setup, lc, "0.5", row_axis=axis, row_values=values)
