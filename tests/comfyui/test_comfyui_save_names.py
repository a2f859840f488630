"""No silent overwrite: Train ΔR, Save ΔR and Export keep a file they did not make unless overwrite is on.

On ComfyUI's real folder_paths (models/qr_lora and models/loras of the test tree): a taken name gets the next
numbered name (name_00001_…, as Save Image numbers), overwrite replaces, and an exact resume writes on in its
own run's files.
"""

from __future__ import annotations

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

from comfy_env import decompose, random_delta, run_train, tiny_model


def _load(pack, name):
    return pack.node("QRLoRALoadDelta").execute(name)[0]


def test_train_keeps_a_file_it_did_not_make_and_overwrites_when_asked(pack, comfy_root):
    folder = comfy_root / "models" / "qr_lora"
    (folder / "mine.safetensors").write_bytes(b"a user's own file")
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    out = run_train(pack, model, basis, "sd15", steps=2, save_name="mine", save_every=1)
    assert (folder / "mine.safetensors").read_bytes() == b"a user's own file"
    assert sorted(p.name for p in folder.glob("mine_00001_*")) == [
        "mine_00001_.safetensors", "mine_00001_.state.safetensors", "mine_00001__step000001.safetensors"]
    assert "mine.safetensors exists and is kept (overwrite is off): saved as mine_00001_.safetensors" \
        in out.ui["text"][0]
    run_train(pack, model, basis, "sd15", steps=2, save_name="mine")  # a second run: the next number
    assert (folder / "mine_00002_.safetensors").is_file()
    run_train(pack, model, basis, "sd15", steps=2, save_name="mine", overwrite=True)
    assert _load(pack, "mine.safetensors").training["steps_done"] == 2  # replaced, as asked


def test_an_exact_resume_writes_on_in_its_own_run(pack, comfy_root):
    folder = comfy_root / "models" / "qr_lora"
    model = tiny_model("sd15")
    basis = decompose(pack, model)
    run_train(pack, model, basis, "sd15", steps=2, save_name="own_run", learning_rate=5e-3)
    first = _load(pack, "own_run.safetensors")
    out = run_train(pack, model, basis, "sd15", steps=4, save_name="own_run", resume=first, learning_rate=5e-3)
    assert out[0].training["resumed_exactly"] is True
    assert _load(pack, "own_run.safetensors").training["steps_done"] == 4  # the same run's file, continued
    assert not list(folder.glob("own_run_0*"))
    # only its weights (a new run): the run's files are another run's now
    weights_only = run_train(pack, model, basis, "sd15", steps=2, save_name="own_run", resume=first,
                             learning_rate=5e-3)
    assert weights_only[0].training["resumed_exactly"] is False
    assert _load(pack, "own_run.safetensors").training["steps_done"] == 4
    assert (folder / "own_run_00001_.safetensors").is_file()


def test_save_delta_and_export_number_taken_names(pack, comfy_root):
    model = tiny_model("sdxl")
    basis = decompose(pack, model)
    delta = random_delta(pack, basis, 3, "d")
    loras = comfy_root / "models" / "loras"
    (loras / "style.safetensors").write_bytes(b"someone's LoRA")
    export = pack.node("QRLoRAExportLoRA")
    kwargs = dict(content=delta, style=delta, lambda_content=1.0, lambda_style=0.5, lambda_extra_1=1.0,
                  lambda_extra_2=1.0, lora_name="style", naming="kohya", dtype="fp16")
    with torch.inference_mode():
        out = export.execute(**kwargs)
        assert (loras / "style.safetensors").read_bytes() == b"someone's LoRA"
        assert "wrote loras/style_00001_.safetensors" in out.ui.as_dict()["text"][0]
        export.execute(**kwargs)
        assert (loras / "style_00002_.safetensors").is_file()
        export.execute(**kwargs, overwrite=True)
        assert (loras / "style.safetensors").read_bytes() != b"someone's LoRA"

        save = pack.node("QRLoRASaveDelta")
        save.execute(delta, "saved_d", "bf16")
        save.execute(delta, "saved_d", "fp32")
        folder = comfy_root / "models" / "qr_lora"
        assert _stored_dtypes(folder / "saved_d.safetensors") == {"BF16"}
        assert _stored_dtypes(folder / "saved_d_00001_.safetensors") == {"F32"}
        save.execute(delta, "saved_d", "fp32", overwrite=True)
        assert _stored_dtypes(folder / "saved_d.safetensors") == {"F32"}


def _stored_dtypes(path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {str(f.get_slice(k).get_dtype()) for k in f.keys()}
