"""The pack loads through ComfyUI's own custom-node loader and declares its nodes as /object_info shows them."""

from __future__ import annotations

import os
import subprocess
import sys


import comfy_env  # noqa: F401  (skips the module without ComfyUI)

import nodes

from comfyui_location import skip_or_fail  # noqa: E402
from qr_comfyui_runtime import COMFYUI_PATH, PACK_DIR

NODE_IDS = {
    "QRLoRADecompose": ({"model", "rank", "preset", "custom_regex", "method", "use_cache"}, ["QR_BASIS", "MODEL"]),
    "QRLoRATrainDelta": ({"model", "basis", "latent", "positive", "steps", "learning_rate", "optimizer", "batch_size",
                          "seed", "timestep_sampling", "loss_space", "training_dtype", "gradient_checkpointing", "mode",
                          "triangular", "trigger_words", "save_name", "save_every", "resume", "lr_schedule",
                          "warmup_steps", "gradient_accumulation", "keep_last", "save_training_state", "preview_every",
                          "preview_steps", "preview_positive", "vae"},
                         ["QR_DELTA", "MODEL", "LOSS_MAP", "IMAGE"]),
    "QRLoRALoadDelta": ({"delta_file", "model", "basis"}, ["QR_DELTA"]),
    "QRLoRAMergeDeltas": ({"model", "content", "style", "lambda_content", "lambda_style", "extra_1", "lambda_extra_1",
                           "extra_2", "lambda_extra_2", "allow_mixed_bases"}, ["MODEL"]),
    "QRLoRASaveDelta": ({"delta", "save_name", "dtype"}, []),
    "QRLoRAExportLoRA": ({"content", "style", "lambda_content", "lambda_style", "lora_name", "naming", "dtype"}, []),
    "QRLoRADeltaSimilarity": ({"delta_a", "delta_b"}, ["IMAGE", "STRING"]),
}


def test_every_node_is_registered_with_declared_inputs_and_tooltips(pack):
    for node_id, (inputs, outputs) in NODE_IDS.items():
        assert node_id in nodes.NODE_CLASS_MAPPINGS, node_id
        info = nodes.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1()  # what GET /object_info serves
        assert info["category"] == "QR-LoRA"
        assert info["display_name"].startswith("QR-LoRA")
        declared = {**info["input"]["required"], **info["input"].get("optional", {})}
        assert inputs <= set(declared), (node_id, inputs - set(declared))
        assert list(info["output"]) == outputs
        for name, spec in declared.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_every_pack_node_is_in_the_category_with_tooltips(pack):
    ours = [cls for cls in nodes.NODE_CLASS_MAPPINGS.values()
            if getattr(cls, "RELATIVE_PYTHON_MODULE", "") == "custom_nodes.qr-lora"]
    assert len(ours) >= len(NODE_IDS)
    for cls in ours:
        info = cls.GET_NODE_INFO_V1()
        assert info["category"] == "QR-LoRA", info["name"]
        declared = {**info["input"]["required"], **info["input"].get("optional", {})}
        for name, spec in declared.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{info['name']}.{name} has no tooltip"


def test_lambda_sliders_and_defaults(pack):
    info = nodes.NODE_CLASS_MAPPINGS["QRLoRAMergeDeltas"].GET_NODE_INFO_V1()
    spec = info["input"]["required"]["lambda_content"][1]
    assert (spec["default"], spec["min"], spec["max"], spec["step"]) == (1.0, -2.0, 2.0, 0.01)
    train = nodes.NODE_CLASS_MAPPINGS["QRLoRATrainDelta"].GET_NODE_INFO_V1()["input"]["required"]
    assert train["steps"][1]["default"] == 500 and train["learning_rate"][1]["default"] == 1e-4


def test_pack_uses_the_v3_entry_point_only(pack):
    package = sys.modules[pack.package]
    assert hasattr(package, "comfy_entrypoint")
    assert not hasattr(package, "NODE_CLASS_MAPPINGS")  # it would make ComfyUI ignore the V3 entry point
    import folder_paths

    paths, extensions = folder_paths.folder_names_and_paths["qr_lora"]
    assert extensions == {".safetensors"}


def test_comfyui_quick_test_for_ci_loads_the_pack_without_import_failed(tmp_path):
    """`main.py --quick-test-for-ci` in a fresh process: the real start-up path, custom nodes included."""
    # ComfyUI's server imports `requests` without listing it in its requirements.txt.
    try:
        import requests  # noqa: F401
    except ImportError:
        skip_or_fail("ComfyUI's server needs `requests`; install it to run main.py")
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "qr-lora").symlink_to(PACK_DIR, target_is_directory=True)
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, "main.py", "--quick-test-for-ci", "--cpu", "--base-directory", str(tmp_path)],
        cwd=COMFYUI_PATH, env=env, capture_output=True, text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    ours = [line for line in log.splitlines() if "qr-lora" in line]
    assert ours, "the pack was not listed among the custom nodes:\n" + log[-3000:]
    assert not any("IMPORT FAILED" in line for line in ours), "\n".join(ours)
