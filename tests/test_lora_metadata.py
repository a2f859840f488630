"""An exported LoRA's metadata describes the file: its ranks as the tensors hold them, the model spec's
fields, the naming; `qr-lora info` shows the same, and the command line's default naming is the one
to share (kohya)."""

import json
import time

import pytest

from qr_core import DecomposeSettings, export_lora, get_basis, merge, select_targets
from qr_core.cli import build_parser, main
from qr_core.adapters.delta import random_delta
from qr_core.files import load_tensors, read_header
from qr_core.merging.merge import DEFAULT_NAMING, NAMING_HELP, module_ranks


def _basis(weights, preset="paper", regex=None, rank=4):
    ts = select_targets({k: v.shape for k, v in weights.items()}, preset, regex)
    return get_basis(weights.__getitem__, ts, DecomposeSettings(rank=rank))


def _deltas(basis):
    c, s = random_delta(basis, 0, 0.1, "content"), random_delta(basis, 1, 0.1, "style")
    c.trigger_words, s.trigger_words = "<c> dog", "<s> style, <c> dog"
    return c, s


def _info(capsys, path) -> dict:
    assert main(["--json", "info", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_fused_flux_ranks_are_dynamic_and_info_agrees(tiny_weights, tmp_path, capsys):
    """FLUX's fused qkv/linear1 stack their q, k, v slices (rank 3·4 = 12) beside rank-4 projections."""
    c, s = _deltas(_basis(tiny_weights))
    path = export_lora(merge([c, s], [1.0, 0.5]), c.targets.shapes, "flux", tmp_path / "mix.safetensors", "kohya",
                       "fp32", sources=["content", "style"], weights=[1.0, 0.5], trigger_words="<c> dog, <s> style")
    tensors, meta = load_tensors(path)
    downs = {k: v.shape[0] for k, v in tensors.items() if k.endswith("lora_down.weight")}
    assert set(downs.values()) == {4, 12}
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "Dynamic"  # kohya's value for per-module ranks
    assert json.loads(meta["qr_lora_module_ranks"]) == {"4": sum(r == 4 for r in downs.values()),
                                                        "12": sum(r == 12 for r in downs.values())}
    assert all(float(tensors[k.replace("lora_down.weight", "alpha")]) == r for k, r in downs.items())
    info = _info(capsys, path)
    assert info["kind"] == "LoRA" and info["naming"] == "kohya" and info["largest_rank"] == 12
    assert info["module_ranks"] == json.loads(meta["qr_lora_module_ranks"])
    assert info["metadata"]["ss_network_dim"] == "Dynamic"


def test_one_rank_everywhere_is_written_as_that_rank(tiny_weights, tmp_path, capsys):
    basis = _basis(tiny_weights, "custom", r"attn\.proj", rank=6)
    path = export_lora(merge([random_delta(basis, 0)], [1.0]), basis.targets.shapes, "flux",
                       tmp_path / "proj.safetensors", "comfyui")
    _, meta = load_tensors(path)
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "6"
    info = _info(capsys, path)
    assert info["naming"] == "comfyui" and info["largest_rank"] == 6 and info["module_ranks"] == {"6": len(basis.targets)}


@pytest.mark.parametrize("arch,spec_arch,resolution", [("sd15", "stable-diffusion-v1/lora", "512x512"),
                                                        ("sdxl", "stable-diffusion-xl-v1-base/lora", "1024x1024"),
                                                        ("sd3", "stable-diffusion-3-medium/lora", "1024x1024"),
                                                        ("flux", "flux-1-dev/lora", "1024x1024")])
def test_model_spec_fields_are_complete(tiny_weights, tmp_path, arch, spec_arch, resolution):
    c, s = _deltas(_basis(tiny_weights))
    path = export_lora(merge([c, s], [1.0, 0.5]), c.targets.shapes, arch, tmp_path / "x.safetensors",
                       sources=["content", "style"], weights=[1.0, 0.5], trigger_words="<c> dog, <s> style")
    _, meta = read_header(path)
    assert meta["modelspec.sai_model_spec"] == "1.0.0"
    assert meta["modelspec.architecture"] == spec_arch and meta["modelspec.resolution"] == resolution
    assert meta["modelspec.implementation"].startswith("https://github.com/")  # the model code the keys name
    assert meta["modelspec.implementation_version"].startswith("qr-lora/")
    assert meta["modelspec.title"] == "x"
    assert meta["modelspec.trigger_phrase"] == "<c> dog, <s> style"
    assert meta["modelspec.merged_from"] == "content, style"
    assert "1·content + 0.5·style" in meta["modelspec.description"]
    time.strptime(meta["modelspec.date"], "%Y-%m-%dT%H:%M:%S%z")  # ISO 8601


def test_cli_exports_kohya_by_default_with_the_deltas_trigger_words(tiny_weights, tmp_path, capsys):
    c, s = _deltas(_basis(tiny_weights))
    paths = [str(c.save(tmp_path / "content.safetensors")), str(s.save(tmp_path / "style.safetensors"))]
    assert main(["--json", "merge", *paths, "--export-lora", "-o", str(tmp_path / "l.safetensors")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["naming"] == DEFAULT_NAMING == "kohya"
    header, meta = read_header(tmp_path / "l.safetensors")
    assert all(k.startswith("lora_unet_") for k in header)
    assert meta["modelspec.trigger_phrase"] == "<c> dog, <s> style"  # each once, in order
    assert module_ranks({k: v["shape"] for k, v in header.items()}) == {
        int(r): n for r, n in json.loads(meta["qr_lora_module_ranks"]).items()}


def test_naming_help_says_which_loader_reads_which():
    merge_parser = build_parser()._subparsers._group_actions[0].choices["merge"]
    naming = next(a for a in merge_parser._actions if a.dest == "naming")
    assert naming.default == "kohya" and NAMING_HELP in naming.help.replace("%%", "%")
    for loader in ("ComfyUI", "diffusers", "A1111", "SD3"):
        assert loader in NAMING_HELP
