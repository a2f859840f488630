"""Node interfaces are a contract: API-format prompts saved against the pack keep validating and running.

tests/comfyui/api_prompts/ holds prompts (POST /prompt format) of every node the pack registers, as they were
written on the day each file is named after (a later file adds the nodes and inputs of its day); Train ΔR's node 12 carries only the inputs of the first release.
Each pack node of them is validated by ComfyUI's own execution.validate_inputs (required inputs, types of the
linked outputs, ranges, combo options) and then run on tiny real models with exactly the prompt's values.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import comfy_env  # noqa: F401  (skips the module without ComfyUI)
import torch

from comfy_env import latent_and_cond, random_delta, tiny_model

PROMPTS = sorted((Path(__file__).parent / "api_prompts").glob("*.json"))
SOURCES = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage"}  # core nodes the prompts feed from


def _prompt(path: Path) -> dict:
    return json.loads(path.read_text())["prompt"]


def _pack_ids(prompt: dict) -> list[str]:
    return [i for i, node in prompt.items() if node["class_type"].startswith("QRLoRA")]


@pytest.fixture
def listed_files(pack, comfy_root, tmp_path, monkeypatch):
    """The files the prompts' pickers name: an (empty) checkpoint in a registered folder, a real ΔR file."""
    import folder_paths

    (tmp_path / "contract_tiny.safetensors").write_bytes(b"")
    paths, exts = folder_paths.folder_names_and_paths["checkpoints"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "checkpoints", ([str(tmp_path)] + list(paths), exts))
    getattr(folder_paths, "filename_list_cache", {}).pop("checkpoints", None)
    model = tiny_model("sdxl")
    basis = pack.node("QRLoRADecompose").execute(model, 4, "paper", "", "fast", False)[0]
    content = random_delta(pack, basis, 1, "fixture")
    style = random_delta(pack, basis, 2, "fixture_style")
    content.save(comfy_root / "models" / "qr_lora" / "contract_fixture.safetensors")
    style.save(comfy_root / "models" / "qr_lora" / "contract_fixture_style.safetensors")
    # Two ordinary LoRA files for K-LoRA's node, written by the pack's own export (kohya naming, as shared).
    export = pack.node("QRLoRAExportLoRA")
    for name, delta in (("contract_content_lora", content), ("contract_style_lora", style)):
        export.execute(lora_name=name, naming="kohya", dtype="fp32", overwrite=True, content=delta, style=delta,
                       lambda_content=1.0, lambda_style=0.0)
    for folder in ("qr_lora", "loras"):
        getattr(folder_paths, "filename_list_cache", {}).pop(folder, None)
    return model


def test_the_prompts_cover_every_node_the_pack_registers(pack):
    import nodes

    registered = {k for k, cls in nodes.NODE_CLASS_MAPPINGS.items()
                  if getattr(cls, "RELATIVE_PYTHON_MODULE", "").endswith("qr-lora") or k.startswith("QRLoRA")}
    covered = {node["class_type"] for path in PROMPTS for node in _prompt(path).values()}
    assert PROMPTS and registered and registered <= covered, sorted(registered - covered)


@pytest.mark.parametrize("path", PROMPTS, ids=lambda p: p.stem)
def test_saved_prompts_still_validate(pack, listed_files, path):
    import execution

    prompt = _prompt(path)
    validated: dict = {}
    for node_id in _pack_ids(prompt):
        ok, errors, _ = asyncio.run(execution.validate_inputs("contract", prompt, node_id, validated))
        assert ok, f"node {node_id} ({prompt[node_id]['class_type']}): {errors}"


@pytest.mark.parametrize("path", PROMPTS, ids=lambda p: p.stem)
def test_saved_prompts_still_run(pack, listed_files, path):
    """Every pack node runs with the prompt's own values (links from the core loaders: tiny real objects)."""
    import comfy.sd

    prompt = _prompt(path)
    latent, cond = latent_and_cond("sdxl")
    with torch.inference_mode():
        vae = comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})  # ComfyUI's own identity VAE
    outputs = {"CheckpointLoaderSimple": (listed_files, None, vae), "CLIPTextEncode": (cond,),
               "EmptyLatentImage": (latent,)}
    results: dict[str, tuple] = {i: outputs[n["class_type"]] for i, n in prompt.items() if n["class_type"] in SOURCES}
    pending = _pack_ids(prompt)
    while pending:  # in link order: a node runs once every node it reads from has
        ready = [i for i in pending if all(v[0] in results for v in prompt[i]["inputs"].values() if _is_link(v))]
        assert ready, f"a link cycle or a missing source among {pending}"
        for node_id in ready:
            node = prompt[node_id]
            kwargs = {k: results[v[0]][v[1]] if _is_link(v) else v for k, v in node["inputs"].items()}
            with torch.inference_mode():  # as ComfyUI's executor runs nodes
                out = pack.node(node["class_type"]).execute(**kwargs)
            results[node_id] = tuple(out.result or ())
            pending.remove(node_id)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)
