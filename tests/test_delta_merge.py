import pickle

import pytest
import torch

from qr_core import (BasisMismatchError, DecomposeSettings, DeltaFileError, QRDelta, export_lora, get_basis,
                     lora_state_dict, merge, merged_delta, select_targets)
from qr_core.files import load_tensors
from qr_core.adapters.delta import random_delta as qr_random_delta
from qr_core.merging.merge import add_to_weights


@pytest.fixture
def basis(tiny_weights):
    ts = select_targets({k: v.shape for k, v in tiny_weights.items()}, "paper")
    return get_basis(tiny_weights.__getitem__, ts, DecomposeSettings(rank=4))


def random_delta(basis, seed, name="", fingerprint=None):
    d = qr_random_delta(basis, seed, 0.1, name)
    d.basis_fingerprint, d.trigger_words, d.training = fingerprint or basis.fingerprint, "<c>", {"steps": 1}
    return d


def apply_plain_lora(weights, lora, naming="comfyui"):
    """What a stock loader does: W + up @ down · alpha / rank per key, nothing QR-specific."""
    out = dict(weights)
    for key in weights:
        stem = key[: -len(".weight")]
        prefix = f"diffusion_model.{stem}" if naming == "comfyui" else "lora_unet_" + stem.replace(".", "_")
        if f"{prefix}.lora_up.weight" in lora:
            up, down = lora[f"{prefix}.lora_up.weight"].float(), lora[f"{prefix}.lora_down.weight"].float()
            out[key] = weights[key] + up @ down * float(lora[f"{prefix}.alpha"]) / down.shape[0]
    return out


def apply_terms(weights, terms):
    return add_to_weights(weights, ((t.target, t.dense()) for t in terms))


@pytest.mark.parametrize("dtype,tol", [("fp32", 0), ("fp16", 1e-3), ("bf16", 1e-2)])
def test_delta_round_trip(basis, tmp_path, dtype, tol):
    d = random_delta(basis, 0)
    path = d.save(tmp_path / "c.safetensors", dtype)
    back = QRDelta.load(path)
    assert (back.arch, back.rank, back.trigger_words, back.training) == ("flux", 4, "<c>", {"steps": 1})
    assert back.basis_fingerprint == basis.fingerprint and back.targets.names() == basis.targets.names()
    for n in d.delta:
        assert torch.allclose(back.delta[n], d.delta[n], atol=tol, rtol=tol)
        assert torch.allclose(back.q[n], d.q[n], atol=tol, rtol=tol)


def test_merge_is_eq_7(basis):
    c, s, x = (random_delta(basis, i) for i in range(3))
    terms = merge([c, s, x], [0.7, 1.3, -0.5])
    for t in terms:
        n = t.target.name
        assert t.rank == 4 and torch.equal(t.up, basis.q[n])
        assert torch.allclose(t.down, 0.7 * c.delta[n] + 1.3 * s.delta[n] - 0.5 * x.delta[n], atol=1e-6)
    m = merged_delta([c, s], [1.0, 0.5])
    assert torch.allclose(m.delta[terms[0].target.name], c.delta[terms[0].target.name] + 0.5 * s.delta[terms[0].target.name])


def test_mixed_bases_refused_unless_allowed(basis):
    c = random_delta(basis, 0, "content")
    s = random_delta(basis, 1, "style", fingerprint="another-basis")
    with pytest.raises(BasisMismatchError, match="different bases"):
        merge([c, s], [1, 1])
    terms = merge([c, s], [1.0, 2.0], allow_mixed_bases=True)
    for t in terms:
        n = t.target.name
        assert t.rank == 8
        assert torch.allclose(t.dense(), c.q[n] @ c.delta[n] + 2 * s.q[n] @ s.delta[n], atol=1e-5)


@pytest.mark.parametrize("naming", ["comfyui", "kohya"])
def test_exported_lora_applied_plainly_equals_the_merge(basis, tiny_weights, tmp_path, naming):
    c, s = random_delta(basis, 0), random_delta(basis, 1)
    terms = merge([c, s], [1.0, 0.6])
    path = export_lora(terms, basis.targets.shapes, "flux", tmp_path / "l.safetensors", naming, "fp32",
                       sources=["c", "s"], weights=[1.0, 0.6])
    lora, meta = load_tensors(path)
    assert meta["ss_network_module"] == "networks.lora" and meta["modelspec.architecture"] == "flux-1-dev/lora"
    # fused keys become one LoRA: q, k, v slices stacked to rank 12 on the qkv key
    up = lora[("diffusion_model.double_blocks.0.img_attn.qkv" if naming == "comfyui"
               else "lora_unet_double_blocks_0_img_attn_qkv") + ".lora_up.weight"]
    assert up.shape == (3 * 48, 12)
    plain = apply_plain_lora(tiny_weights, lora, naming)
    exact = apply_terms(tiny_weights, terms)
    for k in tiny_weights:
        assert torch.allclose(plain[k], exact[k], atol=1e-5), k
    untouched = [k for k in tiny_weights if k not in basis.targets.shapes]
    assert untouched and all(torch.equal(plain[k], tiny_weights[k]) for k in untouched)
    # single-block linear1: only rows 0:3h are targets, the MLP rows stay exactly as they were
    k = "single_blocks.0.linear1.weight"
    assert torch.equal(plain[k][3 * 48:], tiny_weights[k][3 * 48:])


def test_dense_delta_matches_lora_state_dict(basis):
    terms = merge([random_delta(basis, 3)], [1.0])
    sd = lora_state_dict(terms, basis.targets.shapes, dtype="fp32")
    t = terms[0]
    stem = "diffusion_model." + t.target.key[: -len(".weight")]
    full = sd[f"{stem}.lora_up.weight"] @ sd[f"{stem}.lora_down.weight"]
    assert torch.allclose(full[t.target.rows(full.shape[0])], t.dense(), atol=1e-6)


def test_wrong_model_or_rank_is_named(basis, tmp_path):
    path = random_delta(basis, 0).save(tmp_path / "c.safetensors")
    with pytest.raises(BasisMismatchError, match="FLUX.*SDXL"):
        QRDelta.load(path, expect_arch="sdxl")
    with pytest.raises(BasisMismatchError, match="rank 4.*rank 64"):
        QRDelta.load(path, expect_rank=64)
    d = QRDelta.load(path)
    shapes = {k: (v[0] * 2, v[1]) for k, v in basis.targets.shapes.items()}
    with pytest.raises(BasisMismatchError, match="different model size"):
        d.check_model(shapes, "flux")
    with pytest.raises(BasisMismatchError, match="trained on FLUX"):
        d.check_model(basis.targets.shapes, "sd3")
    d.check_model(basis.targets.shapes, "flux")


def test_unreadable_files_are_refused_clearly(basis, tmp_path):
    good = random_delta(basis, 0).save(tmp_path / "c.safetensors")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-100])
    with pytest.raises(DeltaFileError, match="truncated"):
        QRDelta.load(tmp_path / "cut.safetensors")
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"q": [1, 2, 3]}))
    with pytest.raises(DeltaFileError, match="not a safetensors"):
        QRDelta.load(tmp_path / "p.safetensors")
    with pytest.raises(DeltaFileError, match="no such file"):
        QRDelta.load(tmp_path / "missing.safetensors")
    lora = export_lora(merge([random_delta(basis, 1)], [1]), basis.targets.shapes, "flux", tmp_path / "l.safetensors")
    with pytest.raises(DeltaFileError, match="ordinary LoRA"):
        QRDelta.load(lora)


def test_damaged_values_are_refused(basis, tmp_path):
    d = random_delta(basis, 0)
    n = basis.targets.names()[0]
    d.delta[n][0, 0] = float("nan")
    path = d.save(tmp_path / "nan.safetensors", "fp32")
    with pytest.raises(DeltaFileError, match="NaN"):
        QRDelta.load(path)
    d.delta[n] = torch.zeros(3, 3)
    path = d.save(tmp_path / "shape.safetensors", "fp32")
    with pytest.raises(DeltaFileError, match="damaged"):
        QRDelta.load(path)
