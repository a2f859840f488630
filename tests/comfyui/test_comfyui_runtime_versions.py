"""What newer ComfyUI changed under training, each mechanism on the version that has it.

- 0.8: FLUX's RoPE runs through comfy-kitchen kernels without autograd;
  old scaled-fp8 checkpoints load as QuantizedTensor weights.
- ≥ 0.12 (not runnable here): dynamic VRAM reuses cast buffers; the guard
  (per-layer recompute) is tested on these versions by forcing it.
- 0.33: the built-in trainer leaves `training_fp8_bwd` on; Train ΔR turns it off for its run.
- Every version: training changes no global of ComfyUI's, on success, error or cancel, and copies no
  frozen weight of the (shared) model to make it usable by autograd.
"""

from __future__ import annotations

import ast
import importlib.util
import sys

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.ldm.flux.math
import comfy.model_management
import comfy.utils

import comfy_models
from comfy_env import (CPU, TRAIN_DEFAULTS, cancel_after_step, decompose, latent_and_cond, random_delta, run_train,
                       scaled_fp8_checkpoint, tiny_model, triangular_in_official_basis)
from qr_comfyui_runtime import COMFYUI_VERSION

# ComfyUI 0.8 binds comfy-kitchen's RoPE kernel (a custom op with no backward) into FLUX's attention.
KITCHEN_ROPE = importlib.util.find_spec("comfy_kitchen") is not None and COMFYUI_VERSION >= (0, 8)


def comfyui_reference_rope():
    """ComfyUI's own RoPE for machines without comfy-kitchen: the functions in comfy/ldm/flux/math.py's
    `except` branch, compiled from that file (the code ComfyUI runs when the kernel is absent)."""
    path = comfy.ldm.flux.math.__file__
    tree = ast.parse(open(path).read())
    handlers = [n for n in tree.body if isinstance(n, ast.Try)]
    if not handlers:  # before 0.8: the module's apply_rope is that reference itself
        return comfy.ldm.flux.math.apply_rope
    body = [n for n in handlers[0].handlers[0].body if isinstance(n, ast.FunctionDef)]
    namespace = {"Tensor": torch.Tensor, "torch": torch}
    # A test's exec of ComfyUI's own source (`comfy node validate` scans the whole checkout for exec, the
    # package included; tests are not in the package, see .comfyignore).
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)  # noqa: S102
    return namespace["apply_rope"]


def test_flux_trains_with_kitchen_rope_as_with_comfyui_reference_rope(pack, monkeypatch):
    runtime = pack.module("nodes.services.training_runtime")
    kernel = comfy.ldm.flux.math.apply_rope
    assert bool(runtime.kernels_without_autograd()) == KITCHEN_ROPE
    if KITCHEN_ROPE:  # the hazard is real: the kernel itself cannot be differentiated
        q = torch.randn(1, 2, 4, 8, requires_grad=True)
        pe = torch.randn(1, 1, 4, 4, 2, 2)
        with pytest.raises(RuntimeError, match="autograd"):
            kernel(q, q, pe)[0].sum().backward()
    model = tiny_model("flux")
    basis = decompose(pack, model)
    kitchen = run_train(pack, model, basis, "flux", steps=6)
    assert comfy.ldm.flux.math.apply_rope is kernel  # put back after training
    monkeypatch.setattr(comfy.ldm.flux.math, "apply_rope", comfyui_reference_rope())
    reference = run_train(pack, model, basis, "flux", steps=6)
    assert torch.allclose(torch.tensor(kitchen[2]["loss"]), torch.tensor(reference[2]["loss"]), rtol=1e-5)
    # The two RoPEs are the same math in another operation order: float rounding apart. Adam divides each
    # gradient entry by its own running scale, so entries whose gradient is near zero carry that rounding
    # into ΔR (seen: up to 3.8e-6 on ΔR entries of 0.06); a wrong RoPE moves the losses themselves,
    # checked to 1e-5 above.
    for name, d in reference[0].delta.items():
        assert torch.allclose(kitchen[0].delta[name], d, rtol=1e-4, atol=3e-5), name


def comfy_globals() -> dict:
    """Every module-level binding of ComfyUI's modules (by identity), plus torch's global modes."""
    state = {(name, attr): id(value) for name, module in list(sys.modules.items())
             if module is not None and name.split(".")[0] in ("comfy", "comfy_extras", "comfy_api", "nodes")
             for attr, value in list(vars(module).items())}
    state["torch modes"] = (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.get_default_dtype(),
                            torch.is_autocast_enabled())
    if hasattr(comfy.model_management, "in_training"):
        state["in_training"] = comfy.model_management.in_training
    return state


def test_training_leaves_no_global_changed_on_success_error_and_cancel(pack):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    run_train(pack, model, basis, "flux", steps=1)  # first-use imports and caches settle
    before = comfy_globals()

    run_train(pack, model, basis, "flux", steps=2)
    assert comfy_globals() == before

    latent, cond = latent_and_cond("flux")
    with torch.inference_mode():
        latent["samples"][0, 0, 0, 0] = float("nan")
    with torch.inference_mode(), pytest.raises(pack.module("qr_core").NonFiniteLossError, match="learning rate|NaN"):
        pack.node("QRLoRATrainDelta").execute(model, basis, latent, cond, **dict(TRAIN_DEFAULTS, steps=2))
    assert comfy_globals() == before

    with cancel_after_step(1), pytest.raises(comfy.model_management.InterruptProcessingException):
        run_train(pack, model, basis, "flux", steps=5)
    after = comfy_globals()
    assert after == before, sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def test_per_layer_recompute_trains_exactly_as_saving_weights(pack):
    """The dynamic-VRAM guard: a CPU patcher is never dynamic (ComfyUI builds a plain ModelPatcher on a CPU even
    where dynamic VRAM exists), so the guard is forced here; it must not change what training computes."""
    trainer, runtime = pack.module("nodes.services.trainer"), pack.module("nodes.services.training_runtime")
    model = tiny_model("flux")
    assert runtime.weights_need_recompute(model) is False
    basis = decompose(pack, model)
    latent, cond = latent_and_cond("flux")
    results = {}
    for recompute in (False, True):
        adapter = pack.module("qr_core").QRAdapter(basis)
        settings = pack.module("qr_core").TrainSettings(steps=4, lr=1e-2, seed=0)
        with torch.inference_mode():
            results[recompute] = trainer.run_training(model, adapter, latent["samples"], cond, settings,
                                                      trainer.Objective(), torch.float32, False, lambda s, l: None,
                                                      recompute_weights=recompute)
            results[recompute] = (results[recompute], adapter.to_delta())
    (plain, plain_delta), (recomputed, recomputed_delta) = results[False], results[True]
    assert torch.allclose(torch.tensor(plain.losses), torch.tensor(recomputed.losses), rtol=1e-5)
    for name, d in plain_delta.delta.items():
        assert torch.allclose(recomputed_delta.delta[name], d, rtol=1e-4, atol=1e-7), name
    assert any(float(d.abs().max()) > 0 for d in plain_delta.delta.values())


def storages(module: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Every parameter and buffer of `module`: (address of its memory, bytes)."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return {name: (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for name, t in tensors}


def during_training(record):
    """A ProgressBar hook that calls record() whenever Train ΔR reports a step (newer ComfyUI throttles its reports)."""
    def hook(value, total, preview, node_id=None):
        record()
    return hook


def test_training_copies_no_frozen_weight_and_computes_as_on_ordinary_tensors(pack, monkeypatch):
    """ComfyUI loads weights in inference mode, which autograd cannot save; Train ΔR makes them usable in place.

    A copy would be a second model in memory for as long as ComfyUI keeps this (shared) model; under dynamic
    VRAM (0.12+) a full anonymous copy of weights mapped zero-copy from the file. So every parameter and
    buffer keeps its memory during and after the run, and the run computes exactly what it computes on a
    model whose weights were never inference tensors (nothing to release there).
    """
    model = tiny_model("flux")
    weights = list(model.model.parameters())
    assert weights and all(p.is_inference() for p in weights)  # as ComfyUI's loaders leave them
    before = storages(model.model)
    size = sum(nbytes for _, nbytes in before.values())
    assert size > 100_000
    basis = decompose(pack, model)
    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", during_training(lambda: seen.append(storages(model.model))))
    released = run_train(pack, model, basis, "flux", steps=3)
    assert seen and all(s == before for s in seen), "a weight was copied during training"
    assert storages(model.model) == before
    assert not any(p.is_inference() for p in model.model.parameters())  # the release ran, in place
    ordinary = comfy_models.random_model(comfy_models.model_config("flux", "tiny"), CPU, 0, inference_mode=False)
    assert not any(p.is_inference() for p in ordinary.model.parameters())
    reference = run_train(pack, ordinary, basis, "flux", steps=3)
    assert released[2]["loss"] == reference[2]["loss"]
    for name, d in reference[0].delta.items():
        assert torch.equal(released[0].delta[name], d), name


@pytest.mark.skipif(not hasattr(comfy.model_management, "training_fp8_bwd"),
                    reason="this ComfyUI has no comfy.model_management.training_fp8_bwd (the built-in trainer's "
                           "quantized_backward switch, newer than this version)")
def test_fp8_backward_left_on_by_the_builtin_trainer_is_off_for_train_delta(pack, monkeypatch):
    """TrainLoraNode sets training_fp8_bwd from its quantized_backward input and never resets it; quantized
    Linear layers would then compute the gradient ΔR gets through them in FP8. Train ΔR turns it off for
    its run and puts it back afterwards; its results equal those of a run with the switch off."""
    model, _ = scaled_fp8_checkpoint("sd3", seed=5)
    basis = decompose(pack, model)
    reference = run_train(pack, model, basis, "sd3", steps=3)
    monkeypatch.setattr(comfy.model_management, "training_fp8_bwd", True)  # as TrainLoraNode leaves it
    seen = []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        during_training(lambda: seen.append(comfy.model_management.training_fp8_bwd)))
    out = run_train(pack, model, basis, "sd3", steps=3)
    assert seen and not any(seen), "training_fp8_bwd was on during Train ΔR's run"
    assert comfy.model_management.training_fp8_bwd is True  # restored
    assert out[2]["loss"] == reference[2]["loss"]
    for name, d in reference[0].delta.items():
        assert torch.equal(out[0].delta[name], d), name


def test_scaled_fp8_checkpoint_is_read_dequantized_and_trains(pack):
    """An fp8 release as ComfyUI loads it: 0.3.x scaled-fp8 ops, 0.8+ QuantizedTensor (weight_scale,
    comfy_quant keys). Decompose reads the dequantized weight, shapes are the original ones and the scale
    keys are no targets; training, merge and unpatch work on it."""
    weights = pack.module("nodes.services.model_weights")
    model, dequantized = scaled_fp8_checkpoint("sd3", seed=5)
    key = "joint_blocks.0.x_block.attn.qkv.weight"
    state = model.model.diffusion_model.state_dict()
    if COMFYUI_VERSION >= (0, 8):  # converted by comfy.utils.convert_old_quants
        assert "joint_blocks.0.x_block.attn.qkv.weight_scale" in state and "joint_blocks.0.x_block.attn.qkv.comfy_quant" in state
    assert torch.equal(weights.base_weight_getter(model)(key).float(), dequantized[key])
    assert weights.model_shapes(model)[key] == tuple(dequantized[key].shape)
    basis = decompose(pack, model)
    assert basis.arch == "sd3" and "joint_blocks.0.x_block.attn.qkv[q]" in basis.targets.names()
    assert not any("scale" in t.key or "comfy_quant" in t.key for t in basis.targets)
    tri = run_train(pack, model, basis, "sd3", steps=2, triangular=True)[0]
    assert triangular_in_official_basis(pack, model, tri)
    assert any(float(d.abs().max()) > 0 for d in tri.delta.values())
    delta = random_delta(pack, basis, 1, "c")
    merged = pack.node("QRLoRAMergeDeltas").execute(model, content=delta, style=None, lambda_content=1.0,
                                                    lambda_style=1.0, lambda_extra_1=1.0, lambda_extra_2=1.0)[0]
    expected = dequantized[key].clone()
    for t in basis.targets:
        if t.key == key:
            expected[t.rows(expected.shape[0])] += delta.q[t.name] @ delta.delta[t.name]
    with torch.inference_mode():  # as ComfyUI's executor loads models for sampling
        comfy.model_management.load_models_gpu([merged])
    try:  # as the model computes with it: patched, then stored again in fp8 (ComfyUI requantizes)
        got = effective_weight(model, key)
        update, error = expected - dequantized[key], got - expected
        change = got - dequantized[key]
        # fp8 keeps ~2 significant digits: measured ‖error‖/‖update‖ 0.36 and cos(change, update) 0.94 on 0.8
        assert float(error.norm()) < 0.5 * float(update.norm())
        assert float(change.flatten() @ update.flatten()) > 0.9 * float(change.norm() * update.norm())
    finally:
        with torch.inference_mode():
            comfy.model_management.unload_all_models()
    assert torch.equal(effective_weight(model, key), dequantized[key])


def effective_weight(patcher, key: str) -> torch.Tensor:
    """The layer's weight as ComfyUI computes with it (fp8 and scales resolved), patches included."""
    import comfy.model_patcher

    weight, _, convert = comfy.model_patcher.get_key_weight(patcher.model, "diffusion_model." + key)
    layer = patcher.model.get_submodule("diffusion_model." + key[: -len(".weight")])
    with torch.no_grad():
        weight = convert(weight.to(torch.float32, copy=True), inplace=True) if convert else weight.float()
        for fn in getattr(layer, "weight_function", []):  # patches applied at cast time (low VRAM)
            weight = fn(weight)
    return weight
