"""K-LoRA inside ComfyUI (Merge ΔR's mode and the two-LoRA-file node), and Merge ΔR's row decorrelation.

The reference below is written from the K-LoRA reference code (HVision-NKU/K-LoRA, klora.py / utils.py) with
dense ΔW and torch.topk; the weights ComfyUI uses in every model call of its own sampler must equal
W + the reference's choice, layer by layer.
"""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

import comfy.lora
import comfy.model_management
import comfy.patcher_extension
import comfy.sample
from safetensors.torch import save_file

from comfy_env import decompose, diffusion_weights, latent_and_cond, random_delta, tiny_model

CONSTANTS = {"s*": (1.5, 1.5 * 0.85), "s": (1.5, 0.5)}


# --- the reference ---

def reference_gamma(pairs):
    ratios = [torch.abs(c).sum().item() / torch.abs(s).sum().item() for c, s in pairs]
    average = sum(ratios) / len(ratios)
    kept = [r for r in ratios if r < 3 * average]
    return sum(kept) / len(kept)


def reference_content(c, s, k, gamma, progress, pattern):
    """get_klora_weight: True where it returns the content matrix."""
    alpha, beta = CONSTANTS[pattern]
    top_k_sum1 = torch.topk(torch.abs(c).flatten(), k)[0].sum()
    top_k_sum2 = torch.topk(torch.abs(s).flatten(), k)[0].sum()
    scale = alpha * progress + beta
    if pattern == "s*":
        scale = scale % alpha
    return bool(top_k_sum1 / gamma / (top_k_sum2 * scale) > 1)


class Reference:
    """Layers (weight key, first row, end row) → dense ΔW of each adapter; the K-LoRA choice per progress."""

    def __init__(self, content: dict, style: dict, ranks: tuple[int, int], planned: set, pattern: str, lc, ls):
        self.content, self.style, self.planned, self.pattern, self.lc, self.ls = content, style, planned, pattern, lc, ls
        self.k = ranks[0] * ranks[1]
        self.gamma = reference_gamma([(content[u], style[u]) for u in sorted(planned)])

    def content_layers(self, progress):
        return {u for u in self.planned
                if reference_content(self.content[u], self.style[u], self.k, self.gamma, progress, self.pattern)}

    def weights(self, original, progress):
        use_content = self.content_layers(progress)
        out = {}
        for updates, lam, mine in ((self.content, self.lc, lambda u: u in use_content),
                                   (self.style, self.ls, lambda u: u not in use_content)):
            for (key, a, b), dw in updates.items():
                if (key, a, b) in self.planned and not mine((key, a, b)):
                    continue
                w = out.setdefault(key, original[key].clone())
                w[a:b] += lam * dw
        return out


def is_attention(unit, arch, shapes):
    key, a, _ = unit
    if arch in ("sd15", "sdxl"):
        return ".attn1." in key or ".attn2." in key
    if ".single_blocks." in key:
        return key.endswith("linear1.weight") and a < 3 * shapes[key][1]
    return "_attn." in key


# --- sampling with a record of the weights every layer uses ---

def sample_recording(model, arch, keys, steps, sampler="euler", seed=0):
    """Sample; per model call record sigma, the sampler's sigmas and the effective weight of `keys` (the stored
    weight with ComfyUI's per-forward weight functions applied, as comfy.ops does)."""
    latent, cond = latent_and_cond(arch)
    sampling = model.clone()
    calls = []

    def record(apply_model, args):
        sigmas = args["c"]["transformer_options"]["sample_sigmas"]
        calls.append({"sigma": float(args["timestep"][0]), "sigmas": [float(s) for s in sigmas], "weights": {}})
        return apply_model(args["input"], args["timestep"], **args["c"])

    def pre_hook(key):
        def hook(module, inputs):
            w = module.weight.detach().clone()
            for f in module.weight_function:
                w = f(w)
            calls[-1]["weights"].setdefault(key, w)
        return hook

    handles = [model.model.get_submodule(k[: -len(".weight")]).register_forward_pre_hook(pre_hook(k)) for k in keys]
    sampling.set_model_unet_function_wrapper(record)
    noise = comfy.sample.prepare_noise(latent["samples"], seed)
    try:
        with torch.inference_mode():
            out = comfy.sample.sample(sampling, noise, steps, 2.0, sampler, "normal", cond, cond, latent["samples"],
                                      seed=seed, disable_pbar=True)
    finally:
        for h in handles:
            h.remove()
    return out, calls


def progress_of(call):
    """The step a call belongs to: the last level of the sampler's sigmas at or above its sigma."""
    levels = call["sigmas"]
    n = max([i for i in range(len(levels) - 1) if levels[i] >= call["sigma"]], default=0)
    return n / (len(levels) - 1)


def check_calls(calls, reference, original):
    seen = set()
    for call in calls:
        p = progress_of(call)
        want = reference.weights(original, p)
        assert set(want) <= set(call["weights"]), "a patched layer was not seen in the forward"
        for key, w in want.items():
            assert torch.allclose(call["weights"][key], w, atol=1e-6, rtol=1e-5), (p, key)
        seen.add(frozenset(reference.content_layers(p)))
    return seen


# --- ΔR: Merge ΔR's K-LoRA mode ---

def delta_updates(delta):
    out = {}
    for t in delta.targets:
        full = delta.targets.shapes[t.key][0]
        r = t.rows(full)
        dw = delta.q[t.name].float() @ delta.delta[t.name].float()
        out[("diffusion_model." + t.key, r.start, r.stop)] = dw
    return out


def varied(pack, basis, seed, name):
    """A random ΔR whose size differs per target (so that targets switch adapters at different steps)."""
    d = random_delta(pack, basis, seed, name)
    g = torch.Generator().manual_seed(seed + 100)
    for n in d.delta:
        d.delta[n] = d.delta[n] * float(torch.empty(1).uniform_(0.4, 2.5, generator=g))
    return d


@pytest.mark.parametrize("arch,pattern,layers,sampler", [
    ("sdxl", "s*", "all", "euler"),
    ("flux", "s*", "attention", "euler"),
    ("flux", "s", "all", "heun"),
])
def test_merge_klora_weights_per_step_equal_the_reference(pack, arch, pattern, layers, sampler):
    model = tiny_model(arch)
    basis = decompose(pack, model)
    content, style = varied(pack, basis, 1, "content"), varied(pack, basis, 2, "style")
    lc, ls = 0.8, 1.3
    original = {"diffusion_model." + k: v for k, v in diffusion_weights(model).items()}
    shapes = {k: tuple(v.shape) for k, v in original.items()}
    merged = pack.node("QRLoRAMergeDeltas").execute(
        model, content=content, style=style, lambda_content=lc, lambda_style=ls, lambda_extra_1=1.0,
        lambda_extra_2=1.0, merge_mode=f"K-LoRA {pattern}", klora_layers=layers)
    assert "K-LoRA" in merged.ui.as_dict()["text"][0]
    cu, su = delta_updates(content), delta_updates(style)
    planned = {u for u in cu if layers == "all" or is_attention(u, arch, shapes)}
    assert planned != set(cu) or layers == "all"
    reference = Reference(cu, su, (4, 4), planned, pattern, lc, ls)
    # the plan itself: per progress, the same layers as the reference
    _, plan = pack.module("nodes.services.patches").klora_merge_onto(
        model, [content, style], [lc, ls], pattern, layers)
    def patch_key(unit):  # ComfyUI's: the weight key, or (key, (0, offset, size)) for a row slice
        key, a, b = unit
        return key if (a, b) == (0, shapes[key][0]) else (key, (0, a, b - a))

    assert set(plan.layers) == {patch_key(u) for u in planned}
    for n in range(12):
        want = {patch_key(u) for u in reference.content_layers(n / 12)}
        assert plan.content_layers(n / 12) == want, n
    steps = 8
    out, calls = sample_recording(merged[0], arch, sorted({u[0] for u in cu}), steps, sampler)
    assert len(calls) >= steps
    seen = check_calls(calls, reference, original)
    assert len(seen) >= 2 and any(0 < len(s) < len(planned) for s in seen), \
        f"the test should see steps with different and with mixed choices: {[len(s) for s in seen]}"
    comfy.model_management.unload_all_models()  # a loaded model keeps its static patches until unloaded
    after = diffusion_weights(model)
    assert all(torch.equal(after[k[len('diffusion_model.'):]], original[k]) for k in original)


def test_klora_model_samples_alike_offloaded_and_leaves_the_base_model_as_it_was(pack):
    model = tiny_model("sdxl")
    basis = decompose(pack, model)
    content, style = varied(pack, basis, 3, "c"), varied(pack, basis, 4, "s")
    base_before, _ = sample_recording(model, "sdxl", [], 4)
    merged = pack.node("QRLoRAMergeDeltas").execute(model, content=content, style=style, lambda_content=1.0,
                                                    lambda_style=1.0, merge_mode="K-LoRA s*")[0]
    full, _ = sample_recording(merged, "sdxl", [], 4)
    again, _ = sample_recording(merged, "sdxl", [], 4)
    assert torch.equal(full, again), "a second run of the same K-LoRA model differs"
    assert not torch.allclose(full, base_before)
    state = {}
    offloaded = merged.clone()

    def offload_half(patcher):  # what ComfyUI does when memory runs short, after loading and before the run
        patcher.partially_unload(patcher.offload_device, patcher.model_size() // 2)
        cast = [m for m in patcher.model.diffusion_model.modules() if getattr(m, "comfy_cast_weights", False)]
        state.update(lowvram=patcher.model.model_lowvram, cast=len(cast),
                     ours=sum(1 for m in cast if len(m.weight_function) > 0))

    offloaded.add_callback(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, offload_half)
    part, _ = sample_recording(offloaded, "sdxl", [], 4)
    assert state["lowvram"] and state["ours"] > 0, state
    assert torch.allclose(part, full, atol=1e-5, rtol=1e-4)
    comfy.model_management.unload_all_models()
    base_after, _ = sample_recording(model, "sdxl", [], 4)
    assert torch.equal(base_before, base_after), "the base model samples differently after the K-LoRA model"


def test_klora_extras_are_added_and_errors(pack):
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    content, style, extra = (varied(pack, basis, i, n) for i, n in ((5, "c"), (6, "s"), (7, "e")))
    original = {"diffusion_model." + k: v for k, v in diffusion_weights(model).items()}
    merged = pack.node("QRLoRAMergeDeltas").execute(
        model, content=content, style=style, extra_1=extra, lambda_content=1.0, lambda_style=1.0,
        lambda_extra_1=-0.5, lambda_extra_2=1.0, merge_mode="K-LoRA s", klora_layers="all")[0]
    cu, su, eu = delta_updates(content), delta_updates(style), delta_updates(extra)
    reference = Reference(cu, su, (4, 4), set(cu), "s", 1.0, 1.0)
    _, calls = sample_recording(merged, "sd15", sorted({u[0] for u in cu}), 4)
    for call in calls:
        want = reference.weights(original, progress_of(call))
        for (key, a, b), dw in eu.items():
            want[key][a:b] += -0.5 * dw
        for key, w in want.items():
            assert torch.allclose(call["weights"][key], w, atol=1e-6, rtol=1e-5), key
    with pytest.raises(ValueError, match="connect both"):
        pack.node("QRLoRAMergeDeltas").execute(model, content=content, lambda_content=1.0, lambda_style=1.0,
                                               merge_mode="K-LoRA s*")


# --- two LoRA files ---

def write_lora(path, model, prefix, names, rank, seed, alpha=None, strengths=None, keep=lambda unit: True):
    """A LoRA file for `model` in one key naming (`prefix`: ComfyUI's lora-key map decides what each key patches);
    returns unit (weight key, first row, end row) → the dense ΔW it adds (up @ down · alpha / rank)."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    state_shapes = {"diffusion_model." + k: tuple(v.shape) for k, v in model.model.diffusion_model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    tensors, updates = {}, {}
    for stem in sorted(key_map):
        target = key_map[stem]
        key, a, b = (target, None, None) if isinstance(target, str) or target[1] is None else (
            target[0], target[1][1], target[1][1] + target[1][2])
        key = key if isinstance(key, str) else key[0]
        if not stem.startswith(prefix) or len(state_shapes.get(key, ())) != 2 or not any(b in key for b in BLOCKS):
            continue
        rows, cols = state_shapes[key]
        a, b = (0, rows) if a is None else (a, b)
        unit = (key, a, b)
        # b > rows: ComfyUI's map places FLUX's proj_mlp for the released MLP width (4×), wider than the tiny model's
        if unit in updates or not keep(unit) or b > rows:
            continue
        factor = float(torch.empty(1).uniform_(0.3, 3.0, generator=g)) if strengths else 1.0
        up = torch.randn(b - a, rank, generator=g) * 0.1 * factor
        down = torch.randn(rank, cols, generator=g) * 0.1
        scale = 1.0
        if names == ("diff",):  # a full-rank patch format: ComfyUI's own patch math gives its ΔW
            tensors[f"{stem}.diff"] = up @ down
        else:
            tensors[f"{stem}.{names[0]}"], tensors[f"{stem}.{names[1]}"] = up, down
        if alpha is not None and names != ("diff",):
            tensors[f"{stem}.alpha"] = torch.tensor(float(alpha))
            scale = alpha / rank
        updates[unit] = up @ down * scale
    save_file(tensors, str(path))
    return updates


BLOCKS = (".transformer_blocks.", "double_blocks.", "single_blocks.")  # the layers the test files patch
FORMATS = {  # (key prefix, (up name, down name)) — what ComfyUI's loader reads from each kind of file
    "kohya": ("lora_unet_", ("lora_up.weight", "lora_down.weight")),
    "diffusers": ("unet.", ("lora_B.weight", "lora_A.weight")),
    "diffusers-flux": ("transformer.", ("lora_B.weight", "lora_A.weight")),
    "simpletuner": ("lycoris_", ("lora_up.weight", "lora_down.weight")),
    "comfyui": ("diffusion_model.", ("lora_up.weight", "lora_down.weight")),
    "diff": ("lora_unet_", ("diff",)),  # ΔW stored whole (rank 2 here): scored from its dense ΔW, K by its rank
}


@pytest.mark.parametrize("arch,content_format,style_format,layers,pattern", [
    ("sdxl", "kohya", "diffusers", "attention", "s*"),
    ("sdxl", "comfyui", "kohya", "all", "s"),
    ("flux", "diffusers-flux", "simpletuner", "attention", "s*"),
    ("sd15", "kohya", "diff", "all", "s*"),
])
def test_lora_files_weights_per_step_equal_the_reference(pack, comfy_root, arch, content_format, style_format,
                                                          layers, pattern):
    model = tiny_model(arch)
    loras = comfy_root / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    original = {"diffusion_model." + k: v for k, v in diffusion_weights(model).items()}
    shapes = {k: tuple(v.shape) for k, v in original.items()}
    c_prefix, c_names = FORMATS[content_format]
    s_prefix, s_names = FORMATS[style_format]
    content = write_lora(loras / f"klora_{arch}_c.safetensors", model, c_prefix, c_names, 4, 1, alpha=2.0,
                         strengths=True)
    # the style file leaves out one layer the content file has: that layer keeps the content's patch
    first = sorted(content)[0]
    style = write_lora(loras / f"klora_{arch}_s.safetensors", model, s_prefix, s_names, 2, 2,
                       alpha=None if style_format.startswith("diffusers") else 2.0, keep=lambda u: u != first)
    assert set(style) == set(content) - {first} and len(content) > 4
    node = pack.node("QRLoRAKLoRA")
    assert f"klora_{arch}_c.safetensors" in [o for i in node.define_schema().inputs if i.id == "content_lora"
                                             for o in i.options]
    lc, ls = 0.9, 1.1
    out = node.execute(model, f"klora_{arch}_c.safetensors", f"klora_{arch}_s.safetensors", lc, ls, pattern, layers)
    assert "K-LoRA" in out.ui.as_dict()["text"][0]
    planned = {u for u in style if layers == "all" or is_attention(u, arch, shapes)}
    reference = Reference(content, style, (4, 2), planned, pattern, lc, ls)
    _, calls = sample_recording(out[0], arch, sorted({u[0] for u in content}), 8)
    seen = check_calls(calls, reference, original)
    assert any(0 < len(s) < len(planned) for s in seen), [len(s) for s in seen]


def test_lora_file_errors(pack, comfy_root):
    model = tiny_model("sd15")
    loras = comfy_root / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    save_file({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(4, 2),
               "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 4)},
              str(loras / "te_only.safetensors"))
    write_lora(loras / "klora_sd15.safetensors", model, "lora_unet_", FORMATS["kohya"][1], 2, 0)
    node = pack.node("QRLoRAKLoRA")
    with pytest.raises(ValueError, match="none of its layers belongs to this model"):
        node.execute(model, "te_only.safetensors", "klora_sd15.safetensors", 1.0, 1.0, "s*", "attention")
    with pytest.raises(ValueError, match="pattern = 'x' is not an option"):
        node.execute(model, "klora_sd15.safetensors", "klora_sd15.safetensors", 1.0, 1.0, "x", "attention")


# --- row decorrelation in Merge ΔR ---

@pytest.mark.parametrize("mode", ["style ⟂ content", "content ⟂ style", "both"])
def test_merge_decorrelation_patches_the_projected_deltas(pack, mode):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "c"), random_delta(pack, basis, 2, "s")
    lc, ls = 0.7, 1.4
    original = diffusion_weights(model)
    merged = pack.node("QRLoRAMergeDeltas").execute(model, content=content, style=style, lambda_content=lc,
                                                    lambda_style=ls, lambda_extra_1=1.0, lambda_extra_2=1.0,
                                                    decorrelate=mode)
    assert mode in merged.ui.as_dict()["text"][0]
    merged[0].patch_model()
    try:
        got = diffusion_weights(merged[0])
    finally:
        merged[0].unpatch_model()

    def off(a, b):  # a·(I − P_row(b)), the projector from the pseudo-inverse
        return a - a @ torch.linalg.pinv(b) @ b

    for t in basis.targets:
        c, s = content.delta[t.name].float(), style.delta[t.name].float()
        c2 = off(c, s) if mode in ("content ⟂ style", "both") else c
        s2 = off(s, c) if mode in ("style ⟂ content", "both") else s
        if mode != "content ⟂ style":
            assert (s2 @ c.T).abs().max() < 1e-5
        w = original[t.key].clone()
        r = t.rows(w.shape[0])
        w[r] += content.q[t.name] @ (lc * c2) + style.q[t.name] @ (ls * s2)
        assert torch.allclose(got[t.key][r], w[r], atol=1e-5), t.name
    assert all(torch.equal(v, diffusion_weights(model)[k]) for k, v in original.items())


# --- the same decorrelation on Export, λ over Steps and the λ Grid: each equals the node fed the projected ΔR ---

def _decorrelated_pair(pack, content, style, mode):
    return pack.module("qr_core.merging.decorrelate").decorrelate(content, style, mode)


def test_export_decorrelation_loads_as_merges_decorrelation(pack, comfy_root):
    import nodes

    model = tiny_model("sdxl")
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "c"), random_delta(pack, basis, 2, "s")
    mix = dict(content=content, style=style, lambda_content=0.8, lambda_style=1.3, lambda_extra_1=1.0,
               lambda_extra_2=1.0)
    merged = pack.node("QRLoRAMergeDeltas").execute(model, decorrelate="both", **mix)[0]
    pack.node("QRLoRAExportLoRA").execute(lora_name="decorrelated_both", naming="comfyui", dtype="fp32",
                                          overwrite=True, decorrelate="both", **mix)
    loaded = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "decorrelated_both.safetensors", 1.0)[0]
    plain = pack.node("QRLoRAMergeDeltas").execute(model, **mix)[0]
    weights = []
    for m in (merged, loaded, plain):
        m.patch_model()
        try:
            weights.append(diffusion_weights(m))
        finally:
            m.unpatch_model()
    want, got, undecorrelated = weights
    assert all(torch.allclose(got[k], want[k], atol=1e-5) for k in want)
    assert any(not torch.allclose(undecorrelated[k], want[k], atol=1e-4) for k in want)


def _hook_tensors(hooks) -> list[torch.Tensor]:
    """Every tensor in the hooks' weight patches, in order (LoRA adapters or plain tuples)."""
    found = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            found.append(x.float())
        elif isinstance(x, (tuple, list)):
            for y in x:
                walk(y)
        elif hasattr(x, "weights"):
            walk(x.weights)

    for hook in hooks.hooks:
        for key in sorted(hook.weights, key=str):
            walk(hook.weights[key])
    return found


def test_schedule_decorrelation_hooks_the_projected_deltas(pack):
    model = tiny_model("flux")
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "c"), random_delta(pack, basis, 2, "s")
    node = pack.node("QRLoRAScheduleHooks")
    mix = dict(lambda_content=0.9, lambda_style=1.1, lambda_extra_1=1.0, lambda_extra_2=1.0,
               schedule="content-early-style-late")
    got = _hook_tensors(node.execute(model, content=content, style=style, decorrelate="style ⟂ content", **mix)[0])
    dc, ds = _decorrelated_pair(pack, content, style, "style ⟂ content")
    want = _hook_tensors(node.execute(model, content=dc, style=ds, **mix)[0])
    plain = _hook_tensors(node.execute(model, content=content, style=style, **mix)[0])
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert not all(torch.equal(a, b) for a, b in zip(got, plain))


def test_grid_decorrelation_samples_the_projected_deltas(pack):
    import comfy.sd

    model = tiny_model("sd15")
    basis = decompose(pack, model)
    content, style = random_delta(pack, basis, 1, "c", scale=0.5), random_delta(pack, basis, 2, "s", scale=0.5)
    latent, cond = latent_and_cond("sd15")
    latent = {"samples": torch.zeros_like(latent["samples"])}
    vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
    node = pack.node("QRLoRALambdaGrid")

    def cells(c, s, **kw):
        with torch.inference_mode():
            return node.execute(model, c, s, cond, cond, latent, vae, "1", "0.5, 1", 3, 2, 1.0, "euler", "normal",
                                **kw)[1]

    dc, ds = _decorrelated_pair(pack, content, style, "both")
    got = cells(content, style, decorrelate="both")
    assert torch.allclose(got, cells(dc, ds), atol=1e-6)
    assert not torch.allclose(got, cells(content, style), atol=1e-4)
