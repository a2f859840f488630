"""Train ΔR runs: learning-rate schedules and accumulation, step snapshots, exact resume (also after a cancel)."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.model_management
import comfy.utils

from comfy_env import cancel_after_step, decompose, previews_shown, run_train, tiny_model

RUN = dict(steps=6, learning_rate=5e-3, lr_schedule="cosine", warmup_steps=2, gradient_accumulation=2,
           storage_dtype="bf16", batch_size=2)


def load(pack, name, model=None, basis=None):
    return pack.node("QRLoRALoadDelta").execute(name, model, basis)[0]


def cancelled_run(pack, model, basis, step: int, **kwargs):
    with cancel_after_step(step), pytest.raises(comfy.model_management.InterruptProcessingException):
        run_train(pack, model, basis, "sd15", copies=2, **kwargs)


def test_cancelled_run_resumes_to_the_uninterrupted_run(pack, comfy_root):
    """fp32 on the CPU: a run cancelled after step 3 and resumed from its snapshot gives the same losses and ΔR."""
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    whole = run_train(pack, model, basis, "sd15", copies=2, **RUN)
    cancelled_run(pack, model, basis, 3, save_name="run", **RUN)
    folder = comfy_root / "models" / "qr_lora"
    assert sorted(p.name for p in folder.glob("run*")) == ["run.state.safetensors", "run_step000003.safetensors"]
    assert not list(folder.glob(".run*"))  # no temporary file left

    snapshot = load(pack, "run_step000003.safetensors", model, basis)
    assert snapshot.training["steps_done"] == 3 and snapshot.training["state_file"] == "run.state.safetensors"
    resumed = run_train(pack, model, basis, "sd15", copies=2, save_name="run", resume=snapshot, **RUN)
    assert resumed[2]["loss"] == whole[2]["loss"]  # the 3 saved losses and the 3 new ones, bit for bit
    for name, d in whole[0].delta.items():
        assert torch.equal(resumed[0].delta[name], d), name
    assert resumed[0].training["resumed_exactly"] is True
    assert (folder / "run.safetensors").is_file()


def test_a_finished_run_continues_exactly_to_more_steps(pack):
    """A constant-rate run of 3 steps continued to 5 equals a 5-step run; its own length is refused."""
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    common = dict(learning_rate=5e-3, storage_dtype="bf16")
    five = run_train(pack, model, basis, "sd15", steps=5, **common)
    run_train(pack, model, basis, "sd15", steps=3, save_name="short", **common)
    short = load(pack, "short.safetensors")
    longer = run_train(pack, model, basis, "sd15", steps=5, save_name="short", resume=short, **common)
    assert longer[2]["loss"] == five[2]["loss"]
    assert all(torch.equal(longer[0].delta[n], d) for n, d in five[0].delta.items())
    with pytest.raises(ValueError, match="already trained 5 steps: set steps above 5"):
        run_train(pack, model, basis, "sd15", steps=5, save_name="short", resume=load(pack, "short.safetensors"))


def test_resume_state_of_another_kind_of_run_is_refused(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    run_train(pack, model, basis, "sd15", steps=2, save_name="adamw_run")
    delta = load(pack, "adamw_run.safetensors")
    errors = pack.module("qr_core").BasisMismatchError
    with pytest.raises(errors, match="optimizer 'adamw' there, 'adam' here.*set these inputs as they were"):
        run_train(pack, model, basis, "sd15", steps=4, optimizer="Adam", resume=delta)
    with pytest.raises(errors, match="triangular False there, True here"):
        run_train(pack, model, basis, "sd15", steps=4, triangular=True, resume=delta)


def test_resume_from_an_older_snapshot_or_a_plain_file_uses_the_weights(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    run_train(pack, model, basis, "sd15", steps=4, save_name="older", save_every=2, keep_last=0)
    old = load(pack, "older_step000002.safetensors")
    out = run_train(pack, model, basis, "sd15", steps=2, resume=old)
    assert len(out[2]["loss"]) == 2 and out[0].training["resumed_exactly"] is False
    assert "at step 4, this ΔR at step 2: ΔR weights only" in out.ui["text"][0]
    plain = run_train(pack, model, basis, "sd15", steps=2, save_name="plain", save_training_state=False)[0]
    assert "state_file" not in plain.training
    out = run_train(pack, model, basis, "sd15", steps=2, resume=load(pack, "plain.safetensors"))
    assert "no training state" in out.ui["text"][0]


def test_snapshots_are_named_pruned_and_listed_under_their_run(pack, comfy_root):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    folder = comfy_root / "models" / "qr_lora"
    run_train(pack, model, basis, "sd15", steps=7, save_name="snap", save_every=2, keep_last=2)
    assert sorted(p.name for p in folder.glob("snap*")) == [
        "snap.safetensors", "snap.state.safetensors", "snap_step000004.safetensors", "snap_step000006.safetensors"]
    assert load(pack, "snap_step000004.safetensors").training["steps_done"] == 4
    assert load(pack, "snap.safetensors").training["steps_done"] == 7
    run_train(pack, model, basis, "sd15", steps=4, save_name="snap_2", save_every=1, keep_last=0)
    assert len(list(folder.glob("snap_2_step*"))) == 3  # keep_last 0 keeps all; another run's files stay
    assert len(list(folder.glob("snap_step*"))) == 2
    names = pack.node("QRLoRALoadDelta").define_schema().inputs[0].options  # the picker's list, as served
    ours = [n for n in names if n.startswith("snap")]
    assert ours == ["snap.safetensors", "snap_step000004.safetensors", "snap_step000006.safetensors",
                    "snap_2.safetensors", "snap_2_step000001.safetensors", "snap_2_step000002.safetensors",
                    "snap_2_step000003.safetensors"]
    assert not any(n.endswith(".state.safetensors") for n in names)


def test_schedule_and_accumulation_reach_the_training(pack):
    """The record says what ran; accumulation k runs the model k times per optimizer step."""
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    calls = []

    def count(apply_model, args):
        calls.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted = model.clone()
    counted.set_model_unet_function_wrapper(count)
    out = run_train(pack, counted, basis, "sd15", steps=3, gradient_accumulation=3, lr_schedule="linear",
                    warmup_steps=1)
    assert len(out[2]["loss"]) == 3 and len(calls) == 9
    training = out[0].training
    assert (training["lr_schedule"], training["warmup_steps"], training["accumulation"]) == ("linear", 1, 3)


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux"])
def test_previews_at_the_requested_steps_leave_the_training_unchanged(pack, arch):
    model = tiny_model(arch)
    basis = decompose(pack, model)
    settings = dict(steps=5, learning_rate=5e-3, save_name="")
    plain = run_train(pack, model, basis, arch, **settings)
    with previews_shown() as shown:
        watched = run_train(pack, model, basis, arch, preview_every=2, preview_steps=3, **settings)
    *each, last = shown
    assert [s[0] for s in each] == [2, 4, 5]  # every 2 steps, and after the last
    assert all(s[1] == "JPEG" and s[2] == (8, 8) for s in each)  # latent-to-RGB of an 8×8 latent
    assert last == (5, "JPEG", (3 * 8 + 2 * 4, 8))  # then the node shows the whole strip
    assert watched[2]["loss"] == plain[2]["loss"]
    assert all(torch.equal(watched[0].delta[n], d) for n, d in plain[0].delta.items())
    strip = watched[3]
    assert tuple(strip.shape) == (1, 8, 3 * 8 + 2 * 4, 3) and 0 <= float(strip.min()) <= float(strip.max()) <= 1
    assert tuple(plain[3].shape) == (1, 64, 64, 3) and float(plain[3].abs().max()) == 0
    training = watched[0].training
    assert training["previews_at"] == [2, 4, 5] and training["preview_seconds"] > 0 and training["train_seconds"] > 0
    summary = pack.module("nodes.services.delta_files").training_summary(training)  # what Load ΔR shows
    assert "training s" in summary and "previews s" in summary
    text = watched.ui["text"][0]
    assert "3 previews" in text and "training" in text
    assert watched.ui["images"]  # the strip shown on the node after the run


def test_previews_follow_their_prompt_and_decode_with_a_connected_vae(pack):
    import comfy.sd

    model = tiny_model("sd15")
    basis = decompose(pack, model)
    settings = dict(steps=2, learning_rate=5e-3, preview_every=1, preview_steps=2)
    default = run_train(pack, model, basis, "sd15", **settings)[3]
    with torch.inference_mode():
        other = [[torch.full((1, 6, 32), 2.0), {}]]
        vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # ComfyUI's own identity VAE
    prompted = run_train(pack, model, basis, "sd15", preview_positive=other, **settings)[3]
    assert prompted.shape == default.shape and not torch.equal(prompted, default)
    decoded = run_train(pack, model, basis, "sd15", vae=vae, **settings)[3]
    assert tuple(decoded.shape) == (1, 8, 2 * 8 + 4, 3)  # the identity VAE's full decode: the latent's size
    assert not torch.equal(decoded, default)
