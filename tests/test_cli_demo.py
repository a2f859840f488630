import json

import pytest
import torch
from safetensors.torch import save_file

from qr_core.cli import main
from qr_core.world.demo import run_demo
from qr_core.files import atomic_save, load_tensors


@pytest.fixture
def checkpoint(tmp_path, tiny_weights):
    """A full-checkpoint layout: prefixed diffusion weights plus a text-encoder weight that is not ours."""
    sd = {"model.diffusion_model." + k: v.contiguous() for k, v in tiny_weights.items()}
    sd["text_encoders.clip_l.weight"] = torch.randn(4, 4)
    path = tmp_path / "model.safetensors"
    save_file(sd, path)
    return path


def run(capsys, *argv):
    code = main(["--json", *argv])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def test_decompose_info_merge_cache(capsys, tmp_path, checkpoint):
    cache = str(tmp_path / "cache")
    code, cold, _ = run(capsys, "decompose", str(checkpoint), "--rank", "4", "--cache-dir", cache)
    assert code == 0 and cold["arch"] == "flux" and cold["cache"] == "miss" and cold["targets"] == 15
    code, warm, _ = run(capsys, "decompose", str(checkpoint), "--rank", "4", "--cache-dir", cache)
    assert warm["cache"] == "hit" and warm["basis_fingerprint"] == cold["basis_fingerprint"]
    code, info, _ = run(capsys, "info", cold["file"])
    assert info["kind"] == "basis" and info["targets"] == 15
    code, ls, _ = run(capsys, "cache", "ls", "--cache-dir", cache)
    assert len(ls["entries"]) == 1 and ls["total_bytes"] > 0
    code, cleared, _ = run(capsys, "cache", "clear", "--cache-dir", cache)
    assert cleared["freed_bytes"] == ls["total_bytes"]


def test_scaled_fp8_checkpoint_is_dequantized(capsys, tmp_path, tiny_weights):
    sd = {}
    for k, v in tiny_weights.items():
        if v.ndim == 2:
            sd[k] = (v / 0.01).to(torch.float8_e4m3fn)
            sd[k[: -len(".weight")] + ".scale_weight"] = torch.tensor(0.01)
        else:
            sd[k] = v
    save_file(sd, tmp_path / "fp8.safetensors")
    code, res, err = run(capsys, "decompose", str(tmp_path / "fp8.safetensors"), "--rank", "4",
                         "--cache-dir", str(tmp_path / "c"))
    assert code == 0, err
    from qr_core.checkpoint import CheckpointWeights
    w = CheckpointWeights(tmp_path / "fp8.safetensors")("double_blocks.0.img_mlp.0.weight")
    ref = tiny_weights["double_blocks.0.img_mlp.0.weight"]
    assert w.dtype == torch.float32 and (w - ref).abs().max() < 0.1 * ref.abs().max()


def test_errors_exit_nonzero_with_a_message(capsys, tmp_path, checkpoint):
    code, _, err = run(capsys, "decompose", str(checkpoint), "--rank", "4000", "--cache-dir", str(tmp_path))
    assert code == 1 and "lower the rank" in err
    (tmp_path / "x.safetensors").write_bytes(b"not a tensor file")
    code, _, err = run(capsys, "info", str(tmp_path / "x.safetensors"))
    assert code == 1 and "not a safetensors" in err
    code, _, err = run(capsys, "merge", "a", "b", "--weights", "1", "-o", str(tmp_path / "m.safetensors"))
    assert code == 2 and "one λ per file" in err


def test_demo_runs_end_to_end_and_merges_with_the_cli(capsys, tmp_path):
    report = run_demo(tmp_path / "demo", steps=12, rank=8, samples=2, sample_steps=4, log=lambda *_: None)
    for name in ("references", "content_only", "style_only", "merged", "lambda_grid", "loss_curves"):
        assert (tmp_path / "demo" / f"{name}.png").stat().st_size > 0
    assert report["lora_reload_max_abs_error"] < 1e-2
    # the overview has a row per ΔR merge mode of the world's table, each scored
    modes = report["scores_modes"]
    assert list(modes) == report["merge_modes"] and (tmp_path / "demo" / "overview.png").stat().st_size > 0
    assert {"ΔR addition", "ΔR K-LoRA (s*)", "ΔR decorrelated (style ⟂ content)"} <= set(modes)
    assert any(m.startswith("ΔR λ over steps") for m in modes) and any(m.startswith("ΔR λ per block") for m in modes)
    assert all(0 <= v["p_shape"] <= 1 for v in modes.values())
    assert report["params"]["delta_r_per_adapter"] < report["params"]["lora_same_rank"]
    assert report["timings_s"]["decompose_warm"] < report["timings_s"]["decompose_cold"]
    assert -1 <= report["delta_r_cosine"]["min"] <= report["delta_r_cosine"]["max"] <= 1
    c, s = tmp_path / "demo" / "delta_content.safetensors", tmp_path / "demo" / "delta_style.safetensors"
    code, res, _ = run(capsys, "merge", str(c), str(s), "--weights", "1", "0.5", "-o", str(tmp_path / "m.safetensors"))
    assert code == 0 and res["kind"] == "ΔR"
    code, info, _ = run(capsys, "info", str(tmp_path / "m.safetensors"))
    assert info["kind"] == "ΔR" and info["training"]["weights"] == [1.0, 0.5]
    code, res, _ = run(capsys, "merge", str(c), str(s), "-o", str(tmp_path / "l.safetensors"), "--export-lora",
                       "--naming", "kohya")
    code, info, _ = run(capsys, "info", str(tmp_path / "l.safetensors"))
    assert info["kind"] == "LoRA" and info["modules"] == res["modules"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = atomic_save({"a": torch.ones(3)}, tmp_path / "f.safetensors", {"v": "1"})
    import qr_core.files as files

    def broken(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(files, "save_file", broken)
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(3)}, path, {"v": "2"})
    tensors, meta = load_tensors(path)
    assert meta["v"] == "1" and torch.equal(tensors["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["f.safetensors"]
