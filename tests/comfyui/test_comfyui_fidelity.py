"""Faithful to the paper by default, and every option labelled and checked (issue 10)."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch
from comfy_api.latest import io
from safetensors import safe_open

from comfy_env import decompose, run_train, tiny_model


def ks_to_uniform(samples: torch.Tensor) -> float:
    """Kolmogorov–Smirnov distance of the samples' distribution to U(0, 1)."""
    x, _ = samples.double().sort()
    n = len(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(upper - x, x - (upper - 1 / n)).abs().max())


@pytest.mark.parametrize("arch", ["flux", "sd3"])
def test_uniform_draws_unshifted_sigma_on_flow_models(pack, arch):
    trainer = pack.module("nodes.services.trainer")
    ms = tiny_model(arch).model.model_sampling
    torch.manual_seed(0)
    uniform = trainer.sample_sigmas(ms, 4000, "uniform", "cpu")
    assert ks_to_uniform(uniform) < 0.05
    shifted = trainer.sample_sigmas(ms, 4000, "shifted schedule", "cpu")
    assert ks_to_uniform(shifted) > 0.15 and float(shifted.mean()) > 0.6  # ComfyUI's schedule pushes σ up
    logit = trainer.sample_sigmas(ms, 4000, "logit-normal", "cpu")
    assert abs(float(logit.mean()) - 0.5) < 0.02 and ks_to_uniform(logit) > 0.05


def test_uniform_draws_uniform_timesteps_on_eps_models(pack):
    trainer = pack.module("nodes.services.trainer")
    ms = tiny_model("sd15").model.model_sampling
    torch.manual_seed(0)
    timesteps = ms.timestep(trainer.sample_sigmas(ms, 4000, "uniform", "cpu")).float() / 999
    assert ks_to_uniform(timesteps) < 0.05


def combo_inputs(node):
    return [i for i in node.define_schema().inputs if isinstance(i, io.Combo.Input) and i.id != "delta_file"]


def test_every_option_input_refuses_an_unknown_value_listing_the_valid_ones(pack):
    """Through the HTTP API, a value a combo does not offer reaches the node; it must say what is valid."""
    nodes = pack.module("nodes").NODE_LIST
    checked = 0
    for node in nodes:
        schema = node.define_schema()
        for combo in combo_inputs(node):
            args = {i.id: None for i in schema.inputs}
            args[combo.id] = "no-such-option"
            with pytest.raises(ValueError) as e:
                node.execute(**args)
            message = str(e.value)
            assert combo.id in message and all(str(o) in message for o in combo.options), message
            checked += 1
    assert checked >= 12  # every node's options: preset, method, dtype, naming, sampler, scheduler, ...
    # The values from the report: Load ΔR's displayed mode id, fp64, fp8.
    train = pack.node("QRLoRATrainDelta")
    args = {i.id: None for i in train.define_schema().inputs}
    for name, value in (("mode", "delta_r"), ("training_dtype", "fp64")):
        with pytest.raises(ValueError, match="choose one of"):
            train.execute(**dict(args, **{name: value}))


def test_decompose_without_cache_says_cache_off(pack):
    out = pack.node("QRLoRADecompose").execute(tiny_model("sd15"), 4, "paper", "", "fast", False)
    assert "cache off" in out.ui["text"][0] and "not cached" not in out.ui["text"][0]
    assert out.ui["qr_lora_basis"][0]["cache"] == "off"


def test_noise_draws_storage_dtype_and_the_load_summary(pack, comfy_root):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    delta = run_train(pack, model, basis, "sd15", steps=3, noise_draws=3, storage_dtype="fp32",
                      save_name="draws_fp32")[0]
    path = comfy_root / "models" / "qr_lora" / "draws_fp32.safetensors"
    with safe_open(str(path), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
        assert f.metadata()["dtype"] == "fp32"
    for name, d in delta.delta.items():  # fp32: exactly what is in memory
        assert stored[f"delta_r.{name}"].dtype == torch.float32 and torch.equal(stored[f"delta_r.{name}"], d)
    assert delta.training["noise_draws"] == 3
    out = pack.node("QRLoRALoadDelta").execute("draws_fp32.safetensors", model, basis)
    text = out.ui.as_dict()["text"][0]
    assert "trained: steps 3" in text and "noise uniform" in text and "final loss" in text
