"""Exported merges loaded as people load shared LoRAs outside ComfyUI: Hugging Face diffusers'
`load_lora_weights` → `fuse_lora`, into diffusers models whose ComfyUI twins the ΔR were made on.

Checked for every file diffusers accepts: every exported module injected (a fused FLUX qkv becomes
diffusers' to_q/to_k/to_v), nothing ignored or unexpected in diffusers' and peft's log, and the fused
weights equal W + Q·Σλ ΔR (fp32 files to 1e-6; fp16 files within their rounding). Where diffusers
cannot load a naming the test pins how it refuses (the README's table says the same).
"""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import diffusers_twins as dt
import torch
from safetensors.torch import load_file, save_file

dt.require_diffusers()

LAMBDAS = (0.8, -0.6)
TOL = 1e-6
FP16_REL = 2.0 ** -10 * 1.01  # up and down each rounded to fp16 (2⁻¹¹ relative): |error| ≤ 2⁻¹⁰·(|Q|·|ΣλΔR|)


def _sample(t: torch.Tensor) -> torch.Tensor:
    """Every 31st element: enough to see a weight changed (a fused LoRA moves them all), cheap at FLUX.1's width."""
    return t.detach().reshape(-1)[::31].clone()


class Setup:
    """A twin, a merge of two random ΔR made on its ComfyUI weights, and what diffusers must end up with."""

    def __init__(self, pack, arch: str):
        qr = pack.module("qr_core")
        self.export_merge, self.arch = pack.module("qr_core.merging.merge").export_merge, arch
        self.twin = twin = dt.build(arch)
        dt.check_layout(twin)
        shapes = {k: tuple(v.shape) for k, v in twin.comfy.items()}
        targets = qr.select_targets(shapes, "paper")
        # Any orthonormal Q shows how the file loads: no power iterations (FLUX.1's width decomposes in seconds).
        settings = qr.DecomposeSettings(rank=4, method="fast", oversample=4, power_iters=0, max_power_iters=0)
        basis = qr.get_basis(twin.comfy.__getitem__, targets, settings)
        random_delta = pack.module("qr_core.adapters.delta").random_delta
        self.deltas = [random_delta(basis, 1, name="content"), random_delta(basis, 2, name="style")]
        self.targets, self.basis, self.expected, self._fp16_bound = targets, basis, {}, {}
        for t, q, summed in self._factors():
            w = self.expected.setdefault(t.key, twin.comfy[t.key].clone())
            w[t.rows(w.shape[0])] += q @ summed
        self.exported_keys = {t.key for t in targets}
        self.touched = twin.diffusers_keys_of(self.exported_keys)
        twin.keep_originals(self.touched)
        self.untouched = {k: _sample(v) for k, v in twin.model.state_dict().items() if k not in self.touched}

    def _factors(self):
        """(target, Q, ΣλΔR) per target: the merge's update is Q·ΣλΔR on the target's rows."""
        for t in self.targets:
            yield t, self.basis.q[t.name].float(), sum(lam * d.delta[t.name].float() for d, lam in zip(self.deltas, LAMBDAS))

    def fp16_bound(self) -> dict[str, torch.Tensor]:
        """Per weight, how far an fp16 file may be from the fp32 update: 2⁻¹⁰·(|Q|·|ΣλΔR|) (made when first asked)."""
        if not self._fp16_bound:
            for t, q, summed in self._factors():
                b = self._fp16_bound.setdefault(t.key, torch.zeros(self.twin.comfy[t.key].shape))
                b[t.rows(b.shape[0])] += q.abs() @ summed.abs() * FP16_REL
        return self._fp16_bound

    def export(self, tmp_path, naming: str, dtype: str = "fp32"):
        """The merge written by the pack's export (as the Export node and `qr-lora merge --export-lora` write it)."""
        path, modules = self.export_merge(self.deltas, LAMBDAS, tmp_path / f"{self.arch}_{naming}_{dtype}.safetensors",
                                          naming, dtype)
        assert modules == len(self.exported_keys)
        return path

    def load(self, path, fp16: bool = False, **kwargs) -> tuple[list[str], set[str], dict[str, float]]:
        """Load and fuse with the pipeline: (diffusers' log, the modules it injected, `mismatches`); then restore."""
        pipe = dt.pipeline(self.twin)
        try:
            with dt.diffusers_log() as log:
                pipe.load_lora_weights(str(path), **kwargs)
            injected = dt.lora_modules(self.twin.model)
            pipe.fuse_lora()
            pipe.unload_lora_weights()
            state = self.twin.model.state_dict()
            changed = [k for k, sample in self.untouched.items() if not torch.equal(_sample(state[k]), sample)]
            assert not changed, f"diffusers changed weights no exported module touches: {changed[:5]}"
            return log, injected, self.mismatches(state, fp16)
        finally:
            self.twin.restore()

    def mismatches(self, fused: dict[str, torch.Tensor], fp16: bool = False) -> dict[str, float]:
        """diffusers weights that differ from W + Q·ΣλΔR by more than the file's precision allows: key → max error."""
        out = {}
        for k in self.touched:
            err = (fused[k] - self.twin.comfy_part(self.expected, k)).abs()
            limit = TOL + (self.twin.comfy_part(self.fp16_bound(), k) if fp16 else 0)
            if (err > limit).any():
                out[k] = float(err.max())
        return out

    def injected_expected(self) -> set[str]:
        return {k[: -len(".weight")] for k in self.touched}


@pytest.fixture(scope="module")
def setups(pack):
    """Built once per architecture for the module (FLUX's twin holds FLUX.1's width)."""
    cache: dict[str, Setup] = {}

    def get(arch: str) -> Setup:
        if arch not in cache:
            cache[arch] = Setup(pack, arch)
        return cache[arch]

    yield get
    cache.clear()


def _real_problems(log: list[str]) -> list[str]:
    """The warnings diffusers/peft gave, less the note that the minimal pipeline has no text encoders."""
    return [m for m in log if not m.startswith("No LoRA keys associated to NoneType")]


def _assert_exact(setup: Setup, path, fp16: bool = False, **load_kwargs) -> None:
    log, injected, bad = setup.load(path, fp16, **load_kwargs)
    assert not _real_problems(log), f"diffusers/peft reported: {_real_problems(log)}"
    assert injected == setup.injected_expected(), (
        f"not injected: {sorted(setup.injected_expected() - injected)[:5]}, unexpected: {sorted(injected - setup.injected_expected())[:5]}")
    assert not bad, f"fused weights differ from W + Q·ΣλΔR: {dict(list(bad.items())[:5])}"


@pytest.mark.parametrize("arch,dtype", [("sdxl", "fp32"), ("sdxl", "fp16"), ("flux", "fp32")])
def test_kohya_export_fuses_in_diffusers_to_the_merge(setups, tmp_path, arch, dtype):
    setup = setups(arch)
    _assert_exact(setup, setup.export(tmp_path, "kohya", dtype), fp16=dtype == "fp16")


def test_flux_comfyui_naming_also_fuses_in_diffusers(setups, tmp_path):
    """diffusers' FLUX loader renames `diffusion_model.` keys to kohya's and converts them."""
    setup = setups("flux")
    _assert_exact(setup, setup.export(tmp_path, "comfyui"))


def test_sd15_kohya_export_needs_diffusers_told_the_unet_layout(setups, tmp_path):
    """Our SD1.5 keys are ComfyUI's (LDM `input_blocks_1_1_…`): diffusers' SD1 loader reads them only when
    given the UNet config to renumber the blocks (kohya's own SD1 files use diffusers' block names)."""
    setup = setups("sd15")
    path = setup.export(tmp_path, "kohya")
    with pytest.raises(Exception, match="not found in the base model") as refused:
        setup.load(path)
    assert type(refused.value).__name__ == "NoMatchingPeftModuleError"  # peft's, raised through diffusers
    _assert_exact(setup, path, unet_config=setup.twin.model.config)


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "sd3"])
def test_comfyui_naming_is_refused_by_diffusers_unet_and_sd3_loaders(setups, tmp_path, arch):
    """These loaders convert a non-diffusers file only when every key starts with lora_unet_/lora_te…:
    a `diffusion_model.….alpha` key makes the whole file 'invalid'."""
    setup = setups(arch)
    with pytest.raises(ValueError, match="Invalid LoRA checkpoint"):
        setup.load(setup.export(tmp_path, "comfyui"))


def test_sd3_kohya_export_is_ignored_by_diffusers(setups, tmp_path):
    """diffusers' SD3 loader converts no kohya or ComfyUI naming: it keeps only `transformer.` keys, so it
    injects nothing and says so in its log."""
    setup = setups("sd3")
    log, injected, bad = setup.load(setup.export(tmp_path, "kohya"))
    assert not injected
    assert any("No LoRA keys associated to SD3Transformer2DModel" in m for m in log), log
    assert set(bad) == set(setup.touched)  # nothing applied


def _double_alpha(lora: dict, stem: str = "") -> None:
    """Double one module's alpha, or every module's (an export that wrote alpha = 2·rank)."""
    for key in [f"{stem}.alpha"] if stem else [k for k in lora if k.endswith(".alpha")]:
        lora[key] = lora[key] * 2


def _swap_rows(lora: dict, stem: str, size: int) -> None:
    """Swap the q and k row blocks of a fused weight's up matrix (q's update lands on k and back)."""
    up = lora[f"{stem}.lora_up.weight"].clone()
    up[:size], up[size:2 * size] = lora[f"{stem}.lora_up.weight"][size:2 * size], lora[f"{stem}.lora_up.weight"][:size]
    lora[f"{stem}.lora_up.weight"] = up


def _swap_modules(lora: dict, a: str, b: str) -> None:
    for part in ("lora_up.weight", "lora_down.weight", "alpha"):
        lora[f"{a}.{part}"], lora[f"{b}.{part}"] = lora[f"{b}.{part}"], lora[f"{a}.{part}"]


BROKEN = {  # (arch, what): how the file is broken, and the diffusers weights that must then disagree
    ("sdxl", "doubled alpha"): (_double_alpha, None),  # every module's: diffusers ignores one module's (see below)
    ("sdxl", "swapped q/k"): (lambda lora: _swap_modules(lora, "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q",
                                                         "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_k"),
                              ["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                               "mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight"]),
    # FLUX's converter folds each module's alpha into its weights: one module's doubled alpha shows.
    ("flux", "doubled alpha"): (lambda lora: _double_alpha(lora, "lora_unet_single_blocks_0_linear1"),
                                [f"single_transformer_blocks.0.attn.to_{p}.weight" for p in "qkv"]),
    ("flux", "swapped q/k"): (lambda lora: _swap_rows(lora, "lora_unet_double_blocks_0_img_attn_qkv", 3072),
                              ["transformer_blocks.0.attn.to_q.weight", "transformer_blocks.0.attn.to_k.weight"]),
}


@pytest.mark.parametrize("arch,what", list(BROKEN))
def test_a_broken_export_fails_the_comparison(setups, tmp_path, arch, what):
    """The checks above can fail: a file with its alphas doubled, or q and k swapped, still loads in
    diffusers, and the comparison names exactly the weights it spoils (linear1's MLP rows have no update)."""
    setup = setups(arch)
    path = setup.export(tmp_path, "kohya")
    lora = load_file(str(path))
    breaking, spoiled = BROKEN[arch, what]
    breaking(lora)
    broken = tmp_path / f"broken_{arch}.safetensors"
    save_file(lora, str(broken))
    log, injected, bad = setup.load(broken)
    assert injected == setup.injected_expected()
    assert sorted(bad) == sorted(spoiled or setup.touched)


def test_diffusers_ignores_one_module_alpha_that_differs(setups, tmp_path):
    """diffusers 0.42's SD/SDXL loader keeps only the most common alpha: the per-module exceptions it
    passes to peft are keyed `….processor.to_v_lora.down.weight`, which names no module. Exports with
    one rank everywhere (one basis) are unaffected; a mixed-bases export (ranks differ) is not exact there."""
    setup = setups("sdxl")
    lora = load_file(str(setup.export(tmp_path, "kohya")))
    _double_alpha(lora, "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v")
    save_file(lora, str(tmp_path / "one_alpha.safetensors"))
    log, injected, bad = setup.load(tmp_path / "one_alpha.safetensors")
    assert injected == setup.injected_expected()
    assert not bad  # the doubled alpha had no effect
