"""Train ΔR through ComfyUI's sampling path: overfitting, frozen base, cancel, NaN."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.model_management
import comfy.patcher_extension

from comfy_env import (TRAIN_DEFAULTS, cancel_after_step, decompose, diffusion_weights, latent_and_cond,
                       random_delta, run_train, tiny_model, triangular_in_official_basis)

STEPS = {"sd15": 40, "flux": 40}


def hooks_left(model) -> int:
    return sum(len(m._forward_hooks) for m in model.model.diffusion_model.modules())


def probe_loss(pack, model, basis, arch, delta=None, steps=6) -> float:
    """Mean loss over a fixed sequence of (noise, σ): the same seed draws the same sequence, and a
    learning rate of 1e-12 leaves ΔR where it starts (zero, or `delta`)."""
    out = run_train(pack, model, basis, arch, steps=steps, learning_rate=1e-12, seed=123, resume=delta,
                    copies=4, batch_size=4)
    return sum(out[2]["loss"]) / steps


@pytest.mark.parametrize("arch", ["sd15", "flux"])  # an ε-model and a flow model
def test_training_overfits_and_only_changes_delta(pack, arch):
    model = tiny_model(arch)
    basis = decompose(pack, model)
    before = diffusion_weights(model)
    out = run_train(pack, model, basis, arch, steps=STEPS[arch], copies=4, batch_size=4)
    delta, preview, loss = out[0], out[1], out[2]["loss"]
    assert len(loss) == STEPS[arch]
    start, end = probe_loss(pack, model, basis, arch), probe_loss(pack, model, basis, arch, delta)
    assert end < 0.9 * start, (start, end)  # measured on this set-up: ≈0.8
    assert any(float(d.abs().max()) > 0 for d in delta.delta.values())
    after = diffusion_weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "a base weight changed"
    assert hooks_left(model) == 0
    assert preview is not model and preview.patches and not model.patches


def test_flow_model_logit_normal_bf16_checkpointed(pack):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    out = run_train(pack, model, basis, "flux", steps=3, timestep_sampling="logit-normal",
                    training_dtype="bf16", gradient_checkpointing=True, loss_space="x0")
    assert len(out[2]["loss"]) == 3
    assert hooks_left(model) == 0


def test_cancel_keeps_a_resumable_snapshot_and_model_unpatched(pack, comfy_root):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    before = diffusion_weights(model)

    with cancel_after_step(2), pytest.raises(comfy.model_management.InterruptProcessingException):
        run_train(pack, model, basis, "sd15", steps=10, save_name="cancelled")
    folder = comfy_root / "models" / "qr_lora"
    assert sorted(p.name for p in folder.glob("cancelled*")) == ["cancelled.state.safetensors",
                                                                "cancelled_step000002.safetensors"]
    assert not list(folder.glob(".cancelled*"))
    assert hooks_left(model) == 0 and not model.patches
    after = diffusion_weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_non_finite_loss_stops_with_clear_error(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    latent, cond = latent_and_cond("sd15")
    with torch.inference_mode():
        latent["samples"][0, 0, 0, 0] = float("nan")
    with torch.inference_mode(), pytest.raises(pack.module("qr_core").NonFiniteLossError, match="learning rate|NaN"):
        pack.node("QRLoRATrainDelta").execute(model, basis, latent, cond, **dict(TRAIN_DEFAULTS, steps=3))
    assert hooks_left(model) == 0


def test_saved_file_has_metadata_and_resume_continues(pack, comfy_root):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    first = run_train(pack, model, basis, "sd15", steps=4, save_name="content_dog", save_every=2)[0]
    path = comfy_root / "models" / "qr_lora" / "content_dog.safetensors"
    assert path.is_file()
    loaded = pack.node("QRLoRALoadDelta").execute("content_dog.safetensors", model, basis)[0]
    assert loaded.trigger_words == "<c> dog"
    assert loaded.training["steps"] == 4 and loaded.training["loss_space"] == "native"
    resumed = run_train(pack, model, basis, "sd15", steps=6, resume=first)[0]
    assert resumed.training["resumed_from"] == "content_dog" and resumed.training["steps_done"] == 6


def test_q_and_r_mode_and_triangular_delta(pack):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    qr = run_train(pack, model, basis, "flux", steps=2, mode="Q and R")[0]
    t = basis.targets.targets[0]
    assert qr.mode == "qr" and qr.q[t.name].shape[1] == 2 * basis.rank
    assert qr.basis_fingerprint != basis.fingerprint  # a trained Q is a basis of its own
    tri = run_train(pack, model, basis, "flux", steps=2, triangular=True)[0]
    assert triangular_in_official_basis(pack, model, tri)


def test_training_on_fp8_weights_with_manual_cast(pack):
    """Load Diffusion Model with weight_dtype fp8: weights stay fp8, the forward casts them per layer."""
    model = tiny_model("flux", dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    assert model.model.diffusion_model.double_blocks[0].img_attn.qkv.weight.dtype == torch.float8_e4m3fn
    basis = decompose(pack, model)
    before = diffusion_weights(model)
    out = run_train(pack, model, basis, "flux", steps=3)
    assert all(torch.isfinite(torch.tensor(out[2]["loss"])))
    after = diffusion_weights(model)
    assert all(torch.equal(before[k].float(), after[k].float()) and before[k].dtype == after[k].dtype for k in before)


def test_training_on_partially_offloaded_model_matches_full_load(pack):
    """Low VRAM: ComfyUI offloads part of the model (partially_unload); those layers cast their weights per
    forward and apply the model's other patches there (LowVramPatch). The bypass must train exactly as on the
    fully loaded model, here on top of a merged ΔR (training a style on a content-patched model)."""
    model = tiny_model("flux")
    basis = decompose(pack, model)
    original = diffusion_weights(model)
    content = pack.node("QRLoRAMergeDeltas").execute(
        model, content=random_delta(pack, basis, 1, "content", scale=0.2), style=None, lambda_content=1.0,
        lambda_style=1.0, lambda_extra_1=1.0, lambda_extra_2=1.0)[0]
    full = run_train(pack, content, basis, "flux", steps=4)

    offloaded, state = content.clone(), {}

    def offload_half(patcher):  # what ComfyUI does when memory runs short, after loading and before the run
        patcher.partially_unload(patcher.offload_device, patcher.model_size() // 2)
        cast = [m for m in patcher.model.diffusion_model.modules() if getattr(m, "comfy_cast_weights", False)]
        state.update(cast=len(cast), patched_at_cast=sum(1 for m in cast if m.weight_function),
                     lowvram=patcher.model.model_lowvram)

    offloaded.add_callback(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, offload_half)
    part = run_train(pack, offloaded, basis, "flux", steps=4)
    assert state["lowvram"] and state["cast"] > 0 and state["patched_at_cast"] > 0, state
    assert torch.allclose(torch.tensor(part[2]["loss"]), torch.tensor(full[2]["loss"]), rtol=1e-4)
    for name, d in full[0].delta.items():
        assert torch.allclose(part[0].delta[name], d, atol=1e-6, rtol=1e-4), name
    assert hooks_left(model) == 0
    comfy.model_management.unload_all_models()
    after = diffusion_weights(model)
    assert all(torch.equal(after[k], original[k]) for k in original), "offloading left a weight changed"


@pytest.mark.parametrize("arch", ["sdxl", "sd3"])
def test_conditioning_paths_of_sdxl_and_sd3(pack, arch):
    """SDXL's pooled and size conds and SD3's pooled vector reach the model through ComfyUI's guider."""
    model = tiny_model(arch)
    basis = decompose(pack, model)
    before = diffusion_weights(model)
    out = run_train(pack, model, basis, arch, steps=3)
    assert len(out[2]["loss"]) == 3 and all(torch.isfinite(torch.tensor(out[2]["loss"])))
    assert any(float(d.abs().max()) > 0 for d in out[0].delta.values())
    after = diffusion_weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
