"""Dynamic VRAM (ComfyUI ≥ 0.12, comfy-aimdo; the default on NVIDIA) as far as a CPU can show it.

comfy-aimdo loads on a CPU but registers no device there (`init_devices` fails without a CUDA driver) and
ComfyUI builds a plain ModelPatcher for a CPU load device, so nothing here samples or trains on a dynamic
model: bench/dynamic_vram.py does, in bench/gpu_check.sh. What a CPU can show:

- λ over Steps and the λ Grid's schedule rows on ComfyUI's own ModelPatcherDynamic (built for a CUDA device it
  is never loaded to): weight hooks need the non-dynamic copy ComfyUI's guider reloads from the file; without a
  way to reload (GGUF and other custom loaders) the nodes refuse with the fix, where ComfyUI would fail mid-run.
- Training on weights mapped zero-copy from the file, as dynamic VRAM loads them (comfy.utils.load_safetensors,
  assigned, not copied, into the model): they stay mapped, no anonymous copy of the model is made.
- Resident casts made while sampling (inference tensors) are marked to be cast again before training.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.hooks
import comfy.model_patcher
import comfy.ops
import comfy.samplers
import comfy.sd
import comfy.utils
import safetensors.torch

from comfy_env import latent_and_cond, random_delta, run_train, tiny_model

DYNAMIC = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
needs_dynamic = pytest.mark.skipif(DYNAMIC is None, reason="this ComfyUI has no ModelPatcherDynamic (dynamic VRAM "
                                                            "came with ComfyUI 0.12)")
ZERO_COPY = hasattr(comfy.utils, "load_safetensors")


@pytest.fixture(scope="module")
def aimdo():
    """comfy-aimdo's library loaded as ComfyUI's main.py loads it wherever dynamic VRAM may be on: before the
    modules that bind it on import (here they were imported first, under the plain test set-up, so they are
    imported again); it registers no device on a machine without CUDA. Unloaded afterwards."""
    import comfy_aimdo.control

    bound = [m for name, m in sorted(sys.modules.items()) if name.startswith("comfy_aimdo.") and hasattr(m, "lib")
             and name != "comfy_aimdo.control"]
    if not comfy_aimdo.control.init():
        pytest.skip("comfy-aimdo cannot load its library on this operating system")
    try:
        for module in bound:
            importlib.reload(module)
        if not torch.cuda.is_available():
            assert not comfy_aimdo.control.init_devices([0]), "comfy-aimdo registered a GPU on a machine without one"
        yield
    finally:
        comfy_aimdo.control.deinit()
        for module in bound:
            importlib.reload(module)


def dynamic_patcher(model):
    """ComfyUI's own ModelPatcherDynamic around `model`'s BaseModel, for a CUDA device it is never loaded to
    (for a CPU load device ComfyUI builds a plain ModelPatcher instead; only loading needs the GPU)."""
    patcher = DYNAMIC(model.model, torch.device("cuda", 0), torch.device("cpu"))
    assert type(patcher) is DYNAMIC and patcher.is_dynamic()
    return patcher


def saved(model, folder: Path) -> Path:
    path = folder / "tiny.safetensors"
    state = {k: v.detach().clone().contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    safetensors.torch.save_file(state, str(path))
    return path


def hooked(cond, hooks):
    return comfy.hooks.set_hooks_for_conditioning(cond, hooks)


@pytest.fixture
def deltas(pack):
    model = tiny_model("sd3")  # SD3: ComfyUI reads all of MMDiT's sizes from a file, so it can reload one
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    return model, random_delta(pack, basis, 1, "content"), random_delta(pack, basis, 2, "style")


def schedule_node(pack, model, content, style):
    return pack.node("QRLoRAScheduleHooks").execute(model, content=content, style=style, lambda_content=1.0,
                                                    lambda_style=0.5, lambda_extra_1=1.0, lambda_extra_2=1.0,
                                                    schedule="content-early-style-late", custom_schedule="")


@needs_dynamic
def test_hooks_on_a_dynamic_model_that_cannot_be_reloaded_are_refused_with_the_fix(pack, aimdo, deltas):
    plain, content, style = deltas
    model = dynamic_patcher(tiny_model("sd3"))
    assert model.cached_patcher_init is None  # as a custom loader (GGUF) leaves it
    with pytest.raises(pack.module("qr_core").RuntimeSupportError,
                       match="dynamic VRAM.*--disable-dynamic-vram.*core loader"):
        schedule_node(pack, model, content, style)
    # What the refusal spares the user: ComfyUI's guider fails on these hooks once sampling starts.
    _, cond = latent_and_cond("sd3")
    hooks = schedule_node(pack, plain, content, style)[0]
    with pytest.raises(RuntimeError, match="cached_patcher_init"):
        comfy.samplers.CFGGuider(model).set_conds(hooked(cond, hooks), hooked(cond, hooks))
    latent, _ = latent_and_cond("sd3")
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    with torch.inference_mode(), pytest.raises(pack.module("qr_core").RuntimeSupportError, match="λ Grid"):
        pack.node("QRLoRALambdaGrid").execute(model, content, style, cond, cond, latent, vae, "1", "0.5", 0, 2, 1.0,
                                              "euler", "normal", row_axis="schedule", row_values="constant")


@needs_dynamic
def test_hooks_on_a_reloadable_dynamic_model_run_on_the_copy_comfyui_reloads(pack, aimdo, deltas, tmp_path):
    plain, content, style = deltas
    model = dynamic_patcher(tiny_model("sd3"))
    path = saved(plain, tmp_path)
    model.cached_patcher_init = (comfy.sd.load_diffusion_model, (str(path), {}))  # as Load Diffusion Model sets it
    out = schedule_node(pack, model, content, style)
    hooks = out[0]
    assert len(hooks) == 2
    assert "reloads from disk" in str(out.ui.as_dict()), "the node does not say that ComfyUI reloads the model"
    _, cond = latent_and_cond("sd3")
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(hooked(cond, hooks), hooked(cond, hooks))
    delegate = guider.model_patcher
    assert delegate is not model and not delegate.is_dynamic()
    assert delegate.model is not model.model  # reloaded from the file: a second model in memory
    reloaded, original = delegate.model.diffusion_model.state_dict(), plain.model.diffusion_model.state_dict()
    assert all(torch.equal(reloaded[k], original[k]) for k in original)


@pytest.mark.skipif(not ZERO_COPY, reason="this ComfyUI has no zero-copy safetensors reader (comfy.utils."
                                          "load_safetensors, which dynamic VRAM loads with; newer than this version)")
def test_training_keeps_weights_mapped_from_the_file(pack, aimdo, tmp_path):
    """Dynamic VRAM maps a checkpoint's weights from the file and assigns them to the model uncopied. Train ΔR
    must keep it so: a copy made to leave inference mode would be a whole anonymous second model in RAM for
    as long as ComfyUI keeps this one, and would lose the file slice dynamic VRAM streams each weight from."""
    model = tiny_model("sd3")
    path = saved(model, tmp_path)
    with torch.inference_mode():  # as the loader runs in ComfyUI's executor
        state, _ = comfy.utils.load_safetensors(str(path))
        model.model.load_model_weights(state, "", assign=True)  # comfy/sd.py's call for a dynamic patcher
    weights = list(model.model.diffusion_model.parameters())
    assert all(p.is_inference() and hasattr(p.untyped_storage(), "_comfy_tensor_file_slice") for p in weights)
    mapped = storages(model)
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    seen = []
    old, comfy.utils.PROGRESS_BAR_HOOK = comfy.utils.PROGRESS_BAR_HOOK, lambda *a, **k: seen.append(storages(model))
    try:
        mapped_run = run_train(pack, model, basis, "sd3", steps=2)
    finally:
        comfy.utils.PROGRESS_BAR_HOOK = old
    assert seen and all(s == mapped for s in seen), "a weight was copied out of the file mapping"
    assert storages(model) == mapped
    assert all(hasattr(p.untyped_storage(), "_comfy_tensor_file_slice")
               for p in model.model.diffusion_model.parameters())
    reference = run_train(pack, tiny_model("sd3"), basis, "sd3", steps=2)  # the same weights, built in memory
    assert mapped_run[2]["loss"] == reference[2]["loss"]
    assert all(torch.equal(mapped_run[0].delta[k], d) for k, d in reference[0].delta.items())


def storages(model) -> dict[str, int]:
    return {k: p.untyped_storage().data_ptr() for k, p in model.model.diffusion_model.named_parameters()}


@pytest.mark.skipif(not hasattr(comfy.ops, "resolve_cast_module_with_vbar"),
                    reason="this ComfyUI keeps no resident cast weights (dynamic VRAM's vbar casts are newer)")
def test_resident_casts_made_while_sampling_are_cast_again_for_training(pack):
    """Dynamic VRAM keeps a layer's cast weight resident (`_v_weight`, `_v_bias`) and reuses it while its
    signature (`_v_signature`) matches; one cast while sampling is an inference tensor, which autograd cannot
    save. Before training such layers get ComfyUI's own "dirty" mark (signature None): they are cast again,
    outside inference mode. Only a GPU casts into the vbar (bench/dynamic_vram.py samples, then trains)."""
    source = inspect.getsource(comfy.ops.resolve_cast_module_with_vbar)
    assert "s._v_weight" in source and "s._v_signature" in source  # the convention the pack relies on
    runtime = pack.module("nodes.services.training_runtime")
    model = tiny_model("sd3")
    layers = [m for m in model.model.diffusion_model.modules() if isinstance(m, torch.nn.Linear)][:3]
    with torch.inference_mode():  # cast while sampling
        for m in layers[:2]:
            m._v_weight, m._v_bias, m._v_signature = m.weight + 0, m.bias + 0, b"resident"
    layers[2]._v_weight, layers[2]._v_bias, layers[2]._v_signature = torch.zeros(1), None, b"resident"
    try:
        assert runtime.recast_inference_casts(model.model) == 2
        assert [m._v_signature for m in layers] == [None, None, b"resident"]
    finally:
        for m in layers:
            del m._v_weight, m._v_bias, m._v_signature
