"""Bad inputs give the node error a user would see, naming the fix."""

from __future__ import annotations

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)

from comfy_env import random_delta, tiny_model


def decompose(pack, model, rank=4, cache=False):
    return pack.node("QRLoRADecompose").execute(model, rank, "paper", "", "fast", cache)[0]


def save(pack, delta, name):
    pack.node("QRLoRASaveDelta").execute(delta, name, "fp32")


def load(pack, name, model=None, basis=None):
    return pack.node("QRLoRALoadDelta").execute(name, model, basis)[0]


def test_wrong_architecture_is_refused_naming_both(pack):
    flux = tiny_model("flux")
    save(pack, random_delta(pack, decompose(pack, flux), 1, "x"), "flux_delta")
    with pytest.raises(pack.module("qr_core").BasisMismatchError, match=r"FLUX.*SD15|SD15.*FLUX"):
        load(pack, "flux_delta.safetensors", model=tiny_model("sd15"))
    with pytest.raises(pack.module("qr_core").BasisMismatchError, match=r"FLUX.*SD15|SD15.*FLUX"):
        load(pack, "flux_delta.safetensors", basis=decompose(pack, tiny_model("sd15")))


def test_rank_mismatch_is_refused_naming_both(pack):
    model = tiny_model("sd15")
    save(pack, random_delta(pack, decompose(pack, model, rank=4), 1, "x"), "rank4")
    with pytest.raises(pack.module("qr_core").BasisMismatchError, match=r"rank 4.*rank 8"):
        load(pack, "rank4.safetensors", basis=decompose(pack, model, rank=8))


def test_load_list_excludes_the_basis_cache(pack):
    decompose(pack, tiny_model("sd15"), cache=True)
    names = pack.module("nodes.services.folders").delta_file_names()
    assert not any(n.startswith("bases") for n in names)


@pytest.mark.parametrize("content,why", [(b"not a safetensors file at all", "not a safetensors"),
                                         (b"", "empty or truncated")])
def test_corrupt_delta_file(pack, comfy_root, content, why):
    (comfy_root / "models" / "qr_lora" / "broken.safetensors").write_bytes(content)
    with pytest.raises(pack.module("qr_core").DeltaFileError, match=why):
        load(pack, "broken.safetensors")


def test_truncated_delta_file(pack, comfy_root):
    model = tiny_model("sd15")
    save(pack, random_delta(pack, decompose(pack, model), 1, "x"), "whole")
    data = (comfy_root / "models" / "qr_lora" / "whole.safetensors").read_bytes()
    (comfy_root / "models" / "qr_lora" / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(pack.module("qr_core").DeltaFileError, match="truncated"):
        load(pack, "cut.safetensors")


def test_corrupt_cache_entry_is_recomputed(pack, comfy_root):
    model = tiny_model("sd3", seed=21)
    first = decompose(pack, model, cache=True)
    first.path.write_bytes(b"garbage")
    again = decompose(pack, model, cache=True)
    assert again.cache_status.startswith("recomputed")
    assert decompose(pack, model, cache=True).cache_status == "hit"


@pytest.mark.parametrize("name", ["../escape", "../../etc/passwd", "/tmp/absolute"])
def test_names_outside_the_folder_are_refused(pack, name):
    model = tiny_model("sd15")
    delta = random_delta(pack, decompose(pack, model), 1, "x")
    with pytest.raises(ValueError, match="outside"):
        save(pack, delta, name)
    with pytest.raises(ValueError, match="outside"):
        load(pack, name + ".safetensors")
    with pytest.raises(ValueError, match="outside"):
        pack.node("QRLoRAExportLoRA").execute(content=delta, style=delta, lambda_content=1.0, lambda_style=1.0,
                                              lambda_extra_1=1.0, lambda_extra_2=1.0, allow_mixed_bases=False,
                                              lora_name=name, naming="comfyui", dtype="fp16")


def test_delta_for_another_model_size_is_refused_by_merge(pack):
    small = tiny_model("flux")
    delta = random_delta(pack, decompose(pack, small), 1, "x")
    bigger = tiny_model("flux", hidden_size=96, num_heads=3)
    with pytest.raises(pack.module("qr_core").BasisMismatchError, match="different model size"):
        pack.node("QRLoRAMergeDeltas").execute(bigger, content=delta, style=delta, lambda_content=1.0,
                                               lambda_style=1.0, lambda_extra_1=1.0, lambda_extra_2=1.0,
                                               allow_mixed_bases=False)


def test_training_with_a_basis_of_another_architecture_is_refused(pack):
    from comfy_env import latent_and_cond

    basis = decompose(pack, tiny_model("flux"))
    latent, cond = latent_and_cond("sd15")
    with pytest.raises(pack.module("qr_core").BasisMismatchError, match="Decompose on this model"):
        pack.node("QRLoRATrainDelta").execute(
            tiny_model("sd15"), basis, latent, cond, steps=1, learning_rate=1e-4, optimizer="AdamW", batch_size=1,
            seed=0, timestep_sampling="uniform", loss_space="native", training_dtype="fp32",
            gradient_checkpointing=False, mode="ΔR only", triangular=False, trigger_words="", save_name="",
            save_every=0)
