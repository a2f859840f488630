"""λ over steps: the hooks node's weights at every sampling step of ComfyUI's own sampler, and its errors."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.hooks
import comfy.sample

from comfy_env import diffusion_weights, latent_and_cond, random_delta, tiny_model


def decompose(pack, model):
    return pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]


def schedule_hooks(pack, model, content, style, lc, ls, schedule, custom="", **extra):
    kwargs = {"lambda_extra_1": 1.0, "lambda_extra_2": 1.0, **extra}
    return pack.node("QRLoRAScheduleHooks").execute(model, content=content, style=style, lambda_content=lc,
                                                    lambda_style=ls, schedule=schedule, custom_schedule=custom,
                                                    **kwargs)[0]


def weights_per_step(model, hooks, arch, keys, steps):
    """Sample with the hooks on both conds; record (sigma, weights of `keys`) at every model call."""
    latent, cond = latent_and_cond(arch)
    positive = comfy.hooks.set_hooks_for_conditioning(cond, hooks)
    negative = comfy.hooks.set_hooks_for_conditioning(cond, hooks)
    sampling = model.clone()
    seen = []

    def record(apply_model, args):
        live = sampling.model.diffusion_model.state_dict()
        seen.append((float(args["timestep"][0]), {k: live[k].detach().clone() for k in keys}))
        return apply_model(args["input"], args["timestep"], **args["c"])

    sampling.set_model_unet_function_wrapper(record)
    noise = comfy.sample.prepare_noise(latent["samples"], 0)
    with torch.inference_mode():
        comfy.sample.sample(sampling, noise, steps, 2.0, "euler", "normal", positive, negative, latent["samples"],
                            seed=0, disable_pbar=True)
    return seen


def expected(original, basis, update):
    """W with update(target) added on every target's rows (fused weights: all their slices)."""
    out = {k: original[k].clone() for k in basis.targets.shapes}
    for t in basis.targets:
        out[t.key][t.rows(out[t.key].shape[0])] += update(t)
    return out


@pytest.mark.parametrize("arch,schedule,custom", [
    ("sd15", "custom", "0: 1, 0; 0.3: 1, 1; 0.6: 0.25, 1.5"),
    ("flux", "content-early-style-late", ""),
    ("sd3", "crossfade", ""),
])
def test_every_step_samples_the_scheduled_merge(pack, arch, schedule, custom):
    model = tiny_model(arch)
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "content"), random_delta(pack, basis, 2, "style")
    lc, ls = 0.8, 0.6
    original = diffusion_weights(model)
    hooks = schedule_hooks(pack, model, content, style, lc, ls, schedule, custom)
    keys = sorted(basis.targets.shapes)
    steps = 10
    seen = weights_per_step(model, hooks, arch, keys, steps)
    assert len(seen) == steps
    plan = pack.module("qr_core.merging.lambda_schedule").resolve_schedule(schedule, custom)
    to_sigma = model.model.model_sampling.percent_to_sigma
    used = set()
    for sigma, got in seen:
        fc, fs = plan.factors_at(sigma, to_sigma)
        used.add((fc, fs))
        want = expected(original, basis, lambda t: content.q[t.name] @ (lc * fc * content.delta[t.name])
                        + style.q[t.name] @ (ls * fs * style.delta[t.name]))
        for k in keys:
            assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-5), (sigma, k, fc, fs)
    assert len(used) == len(plan.points), f"the {steps} steps did not pass through every point: {used}"
    after = diffusion_weights(model)
    assert all(torch.equal(after[k], original[k]) for k in original), "sampling left the hooks' weights in place"


def test_extras_keep_their_lambda_and_blocks_scale_the_content(pack):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    content, style, extra = (random_delta(pack, basis, i, n) for i, n in ((1, "c"), (2, "s"), (3, "e")))
    original = diffusion_weights(model)
    hooks = schedule_hooks(pack, model, content, style, 1.0, 1.0, "custom", "0: 0, 1; 0.5: 1, 0",
                           extra_1=extra, lambda_extra_1=-0.5, block_lambda_content="single=0.25")
    seen = weights_per_step(model, hooks, "flux", sorted(basis.targets.shapes), 6)
    plan = pack.module("qr_core.merging.lambda_schedule").resolve_schedule("custom", "0: 0, 1; 0.5: 1, 0")
    for sigma, got in seen:
        fc, fs = plan.factors_at(sigma, model.model.model_sampling.percent_to_sigma)
        want = expected(original, basis, lambda t: (
            content.q[t.name] @ content.delta[t.name] * fc * (0.25 if t.key.startswith("single_blocks") else 1.0)
            + style.q[t.name] @ style.delta[t.name] * fs - 0.5 * extra.q[t.name] @ extra.delta[t.name]))
        for k in got:
            assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-5), (sigma, k)


def test_different_bases_are_separate_hooks(pack):
    model = tiny_model("sd15")
    a = decompose(pack, model)
    b = pack.node("QRLoRADecompose").execute(model, 4, "custom", r"attn1\.to_q", "exact", False)[0]
    da, db = random_delta(pack, a, 1, "a"), random_delta(pack, b, 2, "b")
    original = diffusion_weights(model)
    seen = weights_per_step(model, schedule_hooks(pack, model, da, db, 1.0, 1.0, "constant"), "sd15",
                            sorted(a.targets.shapes), 2)
    t = b.targets.targets[0]
    want = original[t.key] + da.q[t.name] @ da.delta[t.name] + db.q[t.name] @ db.delta[t.name]
    assert all(torch.allclose(got[t.key], want, atol=1e-6) for _, got in seen)


def test_hooks_combine_with_core_hook_nodes(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    a = schedule_hooks(pack, model, random_delta(pack, basis, 1, "c"), random_delta(pack, basis, 2, "s"), 1, 1,
                       "style-late")
    b = schedule_hooks(pack, model, random_delta(pack, basis, 3, "c"), random_delta(pack, basis, 4, "s"), 1, 1,
                       "constant", prev_hooks=a)
    assert len(b) == 4 and all(isinstance(h, comfy.hooks.WeightHook) for h in b.hooks)
    from comfy_extras.nodes_hooks import CombineHooks, CreateHookKeyframe, SetHookKeyframes

    assert len(CombineHooks().combine_hooks(hooks_A=a, hooks_B=b)[0]) == 4  # the same hooks, not copies
    halved = CreateHookKeyframe().create_hook_keyframe(strength_mult=0.5, start_percent=0.0)[0]
    rescheduled = SetHookKeyframes().set_hook_keyframes(a, halved)[0]  # core keyframes replace ours
    assert [h.hook_keyframe.keyframes[0].strength for h in rescheduled.hooks] == [0.5, 0.5]


@pytest.mark.parametrize("schedule,custom,match", [
    ("sometimes", "", "unknown λ schedule 'sometimes'; choose one of constant, style-late"),
    ("custom", "0.2: 1, 0", "must be at 0"),
    ("custom", "0: 1, 0; 0.5: 1", "not three numbers"),
    ("custom", "0: 1, 0; 0.6: 1, 1; 0.4: 0, 1", "must rise strictly"),
    ("custom", "  ", "custom schedule is empty"),
])
def test_bad_schedules_name_what_is_valid(pack, schedule, custom, match):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    d = random_delta(pack, basis, 1, "d")
    with pytest.raises(pack.module("qr_core").SettingError, match=match):
        schedule_hooks(pack, model, d, d, 1.0, 1.0, schedule, custom)
