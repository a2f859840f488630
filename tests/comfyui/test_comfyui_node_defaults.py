"""Defaults that must not trip a first run, and the optional optimizers.

- Train ΔR's and λ Grid's seed declare "control after generate" = fixed where ComfyUI's io.Int can say so
  (what /object_info then carries); older versions declare nothing and js/qr_lora_seed.js sets it (the
  browser check is tests/live/test_live_seed_widgets.py).
- gradient_checkpointing is on by default; λ Grid's cfg 0 samples with the model's own cfg.
- Prodigy and AdamW 8-bit run when their package is installed and say what to install when it is not.
"""

from __future__ import annotations

import sys

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

from comfy_api.latest import io

from comfy_env import decompose, latent_and_cond, random_delta, run_train, tiny_model

SEEDED = ("QRLoRATrainDelta", "QRLoRALambdaGrid")


@pytest.mark.parametrize("node_id", SEEDED)
def test_seed_control_starts_fixed_where_the_schema_can_say_so(pack, node_id):
    seed = pack.node(node_id).INPUT_TYPES()["required"]["seed"][1]  # what /object_info serves
    if hasattr(io, "ControlAfterGenerate"):
        assert seed["control_after_generate"] == "fixed"
    else:  # only a bool fits there, and True means randomize: js/qr_lora_seed.js sets fixed instead
        assert "control_after_generate" not in seed
    assert "'fixed'" in seed["tooltip"]


def test_gradient_checkpointing_is_on_by_default(pack):
    info = pack.node("QRLoRATrainDelta").INPUT_TYPES()["required"]["gradient_checkpointing"][1]
    assert info["default"] is True
    assert pack.module("nodes.services.training_run").RunSettings().gradient_checkpointing is True


@pytest.mark.parametrize("arch,expected", [("flux", 1.0), ("sd3", 4.0), ("sdxl", 7.0), ("sd15", 7.0)])
def test_grid_cfg_zero_is_the_models_own(pack, arch, expected):
    grid_cfg = pack.module("nodes.services.lambda_grid").grid_cfg
    model = tiny_model(arch)
    assert grid_cfg(model, 0.0) == expected
    assert grid_cfg(model, 7.0) == 7.0  # an old prompt's cfg 7 stays 7
    assert pack.node("QRLoRALambdaGrid").INPUT_TYPES()["required"]["cfg"][1]["default"] == 0.0


def test_grid_on_flux_with_the_default_cfg_samples_at_cfg_1(pack):
    import comfy.sd

    model = tiny_model("flux")
    basis = decompose(pack, model)
    delta = random_delta(pack, basis, 1, "c", scale=0.5)
    latent, cond = latent_and_cond("flux")
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
        neg = [[cond[0][0] * -1, dict(cond[0][1])]]  # a negative that would change a cfg > 1 sample

        def cells(cfg):
            return pack.node("QRLoRALambdaGrid").execute(model, delta, delta, cond, neg, latent, vae, "1", "1",
                                                         3, 2, cfg, "euler", "simple")[1]
        auto, one, seven = cells(0.0), cells(1.0), cells(7.0)
    assert torch.equal(auto, one)
    assert not torch.allclose(auto, seven)


def _missing(monkeypatch, module: str) -> None:
    """The package as absent from this Python (an import of it fails), whether or not it is installed."""
    monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("shown,module", [("Prodigy", "prodigyopt"), ("AdamW 8-bit", "bitsandbytes")])
def test_a_missing_optimizer_package_is_named_with_its_install(pack, monkeypatch, shown, module):
    _missing(monkeypatch, module)
    node = pack.node("QRLoRATrainDelta")
    tooltip = node.INPUT_TYPES()["required"]["optimizer"][1]["tooltip"]
    assert f"Not available here: {shown}: the optimizer {shown} needs the package {module}" in tooltip
    spec = node.INPUT_TYPES()["required"]["optimizer"]
    assert shown in (spec[0] if isinstance(spec[0], list) else spec[1]["options"])  # still listed: prompts stay valid
    loop = pack.module("qr_core.training.loop")
    optimizer_id = {v: k for k, v in loop.OPTIMIZERS.items()}[shown]
    assert f"`pip install {module}`" in loop.optimizer_missing(optimizer_id)
    if shown == "Prodigy" or torch.cuda.is_available():  # 8-bit AdamW refuses CPU parameters first
        model = tiny_model("sd15")
        with pytest.raises(pack.module("qr_core.errors").RuntimeSupportError, match=f"`pip install {module}`"):
            run_train(pack, model, decompose(pack, model), "sd15", steps=1, optimizer=shown)


def test_prodigy_trains_and_resumes_exactly(pack):
    """With prodigyopt installed (the [optimizers] extra, which CI installs): it trains at lr 1, and a run
    continued from its state equals the uninterrupted run, Prodigy's own step-size estimate included."""
    pytest.importorskip("prodigyopt", reason="the optional package prodigyopt (pip install -e '.[optimizers]')")
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    run = dict(optimizer="Prodigy", learning_rate=1.0)
    whole = run_train(pack, model, basis, "sd15", steps=4, **run)
    assert whole[0].training["optimizer"] == "prodigy" and all(torch.isfinite(torch.tensor(whole[2]["loss"])))
    assert any(d.abs().max() > 0 for d in whole[0].delta.values())
    run_train(pack, model, basis, "sd15", steps=2, save_name="prodigy_run", **run)
    first = pack.node("QRLoRALoadDelta").execute("prodigy_run.safetensors")[0]
    resumed = run_train(pack, model, basis, "sd15", steps=4, save_name="prodigy_run", resume=first, **run)
    assert resumed[0].training["resumed_exactly"] is True
    assert resumed[2]["loss"] == whole[2]["loss"]
    assert all(torch.equal(resumed[0].delta[n], d) for n, d in whole[0].delta.items())


def test_adamw_8bit_on_the_cpu_says_it_needs_a_gpu(pack):
    """Installed or not, bitsandbytes' 8-bit AdamW is refused for CPU parameters (its run: bench/gpu_check.sh)."""
    model = tiny_model("sd15")
    with pytest.raises(pack.module("qr_core.errors").RuntimeSupportError, match="CUDA GPU"):
        run_train(pack, model, decompose(pack, model), "sd15", steps=1, optimizer="AdamW 8-bit")
