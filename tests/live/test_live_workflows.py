"""Every shipped workflow against the live server's /object_info: no missing node, no red input."""

from __future__ import annotations

import json

import pytest

from workflow_check import (BELOW_KEY, PACK_DIR, REQUIRES_KEY, unmet_requirement, validate, version_tuple,
                            workflow_files)

EXPECTED = {"qr_lora_sdxl_train_merge", "qr_lora_sd35_train_merge", "qr_lora_flux_dev_train_merge",
            "qr_lora_flux_dev_fp8_24gb_train_merge", "qr_lora_sdxl_lambda_grid", "qr_lora_sdxl_nway_composition",
            "qr_lora_sdxl_use_trained", "qr_lora_sd35_use_trained", "qr_lora_flux_dev_use_trained",
            "qr_lora_sdxl_dataset_train", "qr_lora_sdxl_dataset_train_comfyui_0_33", "qr_lora_flux2_dev_train_merge",
            "qr_lora_qwen_image_train_merge", "qr_lora_sdxl_lambda_schedule", "qr_lora_flux_dev_fp8_24gb_use_trained",
            "qr_lora_flux2_dev_use_trained", "qr_lora_qwen_image_use_trained"}
NEWER = ("flux2_dev", "qwen_image")  # fp8 files as shipped; FLUX.2 needs ComfyUI ≥ 0.8
# Make Training Dataset's texts lost its widget in 0.33: a dataset workflow for each side of that change.
DATASET_WORKFLOWS = ("qr_lora_sdxl_dataset_train", "qr_lora_sdxl_dataset_train_comfyui_0_33")


def test_the_promised_workflows_exist_with_thumbnails(workflow_paths):
    names = {p.stem for p in workflow_paths}
    assert EXPECTED <= names, EXPECTED - names
    missing = [p.name for p in workflow_paths if not p.with_suffix(".jpg").is_file()]
    assert not missing, f"no thumbnail (<name>.jpg, the template browser's convention) for {missing}"


def test_template_browser_lists_the_workflows(comfy_server):
    listed = comfy_server.get("/workflow_templates")
    assert EXPECTED <= set(listed.get("qr-lora", [])), listed


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.stem)
def test_workflow_fits_the_live_nodes(comfy_server, path):
    workflow = json.loads(path.read_text())
    reason = unmet_requirement(workflow, comfy_server.object_info, comfy_server.version)
    if reason:
        pytest.skip(reason)
    report = validate(workflow, comfy_server.object_info)
    assert not report.problems, "\n".join(report.problems)
    assert not any(t.startswith("QRTest") for t in report.node_types), "a test-only node in a shipped workflow"
    assert "Note" in report.node_types or "MarkdownNote" in report.node_types, "no Note explains the steps"
    assert any(t.startswith("QRLoRA") for t in report.node_types)
    # Every model file a loader names is declared for the front end's download offer.
    for node in workflow["nodes"]:
        if node["type"] in ("CheckpointLoaderSimple", "UNETLoader", "DualCLIPLoader", "CLIPLoader", "VAELoader"):
            declared = {m["name"] for m in node["properties"].get("models", [])}
            named = {v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(".safetensors")}
            assert named and named <= declared, (node["type"], named, declared)
            for m in node["properties"]["models"]:
                assert m["url"].startswith("https://") and m["directory"], m


def test_a_stale_version_declaration_fails(comfy_server):
    """A workflow that runs on this server as it is, yet declares versions that exclude it, is an error."""
    workflow = json.loads((workflow_files()[0].parent / "qr_lora_sdxl_train_merge.json").read_text())
    assert unmet_requirement(workflow, comfy_server.object_info, comfy_server.version) is None
    major, minor, patch = version_tuple(comfy_server.version)
    for key, version in ((REQUIRES_KEY, f"{major}.{minor}.{patch + 1}"), (BELOW_KEY, comfy_server.version)):
        declared = {**workflow, "extra": {**workflow["extra"], key: version}}
        with pytest.raises(AssertionError, match="runs it as it is"):
            unmet_requirement(declared, comfy_server.object_info, comfy_server.version)


def test_paper_settings_in_the_train_merge_workflows(comfy_server):
    from workflow_check import widget_slots

    info = comfy_server.object_info["QRLoRATrainDelta"]
    names = [s[0] for s in widget_slots(info)]
    prompts = set()
    for arch in ("sdxl", "sd35", "flux_dev", "flux_dev_fp8_24gb") + NEWER:
        wf = json.loads((workflow_files()[0].parent / f"qr_lora_{arch}_train_merge.json").read_text())
        trains = [dict(zip(names, n["widgets_values"])) for n in wf["nodes"] if n["type"] == "QRLoRATrainDelta"]
        assert len(trains) == 2
        for t in trains:
            assert (t["steps"], t["learning_rate"], t["mode"]) == (500, 1e-4, "ΔR only")
            assert t["gradient_checkpointing"]  # the node's default: a first run that fits
        decomposes = [n for n in wf["nodes"] if n["type"] == "QRLoRADecompose"]
        assert decomposes and decomposes[0]["widgets_values"][0] == 64
        scales = [n["widgets_values"] for n in wf["nodes"] if n["type"] == "ImageScale"]
        assert scales and all(v[1:3] == [512, 512] for v in scales)
        prompts |= {n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "CLIPTextEncode"}
        if arch in NEWER:  # the fp8 files Comfy-Org ships, read as stored
            # FLUX.2's CLIPLoader type and latent node came with 0.8; Qwen-Image's nodes are in 0.3.64 too.
            assert wf["extra"].get(REQUIRES_KEY) == ("0.8.0" if arch == "flux2_dev" else None)
        if "fp8" in arch:
            unet = next(n for n in wf["nodes"] if n["type"] == "UNETLoader")
            assert unet["widgets_values"][1] == "fp8_e4m3fn"
    assert {"a photo of a <c> dog", "a cat in <s> style", "a <c> dog in <s> style"} <= prompts


def _widgets(comfy_server, node: dict) -> dict:
    from workflow_check import widget_slots

    names = [s[0] for s in widget_slots(comfy_server.object_info[node["type"]])]
    return dict(zip(names, node["widgets_values"]))


@pytest.mark.parametrize("arch", ["sdxl", "sd35", "flux_dev", "flux_dev_fp8_24gb", "flux2_dev", "qwen_image"])
def test_use_trained_loads_what_train_merge_saves(comfy_server, arch):
    """'Use two trained ΔR' picks the files its train-and-merge workflow writes, and merges them without training."""
    folder = workflow_files()[0].parent
    use = json.loads((folder / f"qr_lora_{arch}_use_trained.json").read_text())
    train = json.loads((folder / f"qr_lora_{arch}_train_merge.json").read_text())
    saved = [_widgets(comfy_server, n)["save_name"] + ".safetensors" for n in train["nodes"]
             if n["type"] == "QRLoRATrainDelta"]
    loaded = [_widgets(comfy_server, n)["delta_file"] for n in use["nodes"] if n["type"] == "QRLoRALoadDelta"]
    assert loaded == saved and len(loaded) == 2
    types = [n["type"] for n in use["nodes"]]
    assert "QRLoRATrainDelta" not in types and "QRLoRADecompose" not in types
    assert types.count("QRLoRAMergeDeltas") == 1 and "KSampler" in types


def test_each_version_with_the_dataset_nodes_has_one_dataset_workflow(comfy_server):
    """The dataset workflows' declared versions leave no gap and no overlap on any ComfyUI CI runs."""
    folder = workflow_files()[0].parent
    have = version_tuple(comfy_server.version)
    fitting = []
    for name in DATASET_WORKFLOWS:
        extra = json.loads((folder / f"{name}.json").read_text())["extra"]
        if version_tuple(extra[REQUIRES_KEY]) <= have and (BELOW_KEY not in extra
                                                           or have < version_tuple(extra[BELOW_KEY])):
            fitting.append(name)
    assert len(fitting) == (1 if "MakeTrainingDataset" in comfy_server.object_info else 0), fitting


@pytest.mark.parametrize("name", DATASET_WORKFLOWS)
def test_dataset_workflow_feeds_the_dataset_lists_to_train(comfy_server, name):
    """Folder of captioned images → Make Training Dataset → Train ΔR's latent and positive (ComfyUI ≥ 0.8)."""
    workflow = json.loads((workflow_files()[0].parent / f"{name}.json").read_text())
    reason = unmet_requirement(workflow, comfy_server.object_info, comfy_server.version)
    if reason:
        pytest.skip(reason)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    into = {(nodes[l[3]]["type"], nodes[l[3]]["inputs"][l[4]]["name"]): (nodes[l[1]]["type"], l[2])
            for l in workflow["links"]}
    assert into[("QRLoRATrainDelta", "latent")] == ("MakeTrainingDataset", 0)
    assert into[("QRLoRATrainDelta", "positive")] == ("MakeTrainingDataset", 1)
    assert into[("MakeTrainingDataset", "texts")] == ("LoadImageTextDataSetFromFolder", 1)
    # The server lists the folder the workflow names (conftest made it, as a user would).
    load = next(n for n in workflow["nodes"] if n["type"] == "LoadImageTextDataSetFromFolder")
    assert _widgets(comfy_server, load)["folder"] in comfy_server.object_info[load["type"]]["input"]["required"][
        "folder"][1]["options"]
    info = comfy_server.object_info["MakeTrainingDataset"]
    assert info["output_is_list"] == [True, True]


def test_a_new_users_server_offers_every_image_the_workflows_load(comfy_server, workflow_paths):
    """The server started with no image in input/ (conftest): the pack copied its example_inputs/ there on load,
    so each workflow's Load Image has its file on the first queue (test_live_prompt queues them)."""
    offered = comfy_server.object_info["LoadImage"]["input"]["required"]["image"][0]
    named = {node["widgets_values"][0] for path in workflow_paths for node in json.loads(path.read_text())["nodes"]
             if node["type"] == "LoadImage"}
    assert named and named <= set(offered), (named, offered)
    examples = PACK_DIR / "example_inputs"
    for name in named:
        assert (comfy_server.base / "input" / name).read_bytes() == (examples / name).read_bytes(), name
