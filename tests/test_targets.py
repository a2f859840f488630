import pytest

from qr_core import TargetError, detect_architecture, select_targets


def flux_shapes(h=64, mlp=256, double=2, single=2):
    s = {}
    for n in range(double):
        for st in ("img", "txt"):
            p = f"double_blocks.{n}.{st}_"
            s.update({p + "attn.qkv.weight": (3 * h, h), p + "attn.proj.weight": (h, h),
                      p + "mlp.0.weight": (mlp, h), p + "mlp.2.weight": (h, mlp), p + "mod.lin.weight": (6 * h, h)})
    for n in range(single):
        p = f"single_blocks.{n}."
        s.update({p + "linear1.weight": (3 * h + mlp, h), p + "linear2.weight": (h, h + mlp),
                  p + "norm.query_norm.scale": (h // 2,)})
    s["img_in.weight"] = (h, 64)
    return s


def sd3_shapes(h=64, depth=3):
    s = {}
    for n in range(depth):
        for st in ("x_block", "context_block"):
            p = f"joint_blocks.{n}.{st}."
            s[p + "attn.qkv.weight"] = (3 * h, h)
            if not (st == "context_block" and n == depth - 1):  # pre_only: no proj, no mlp
                s[p + "attn.proj.weight"] = (h, h)
                s[p + "mlp.fc1.weight"] = (4 * h, h)
                s[p + "mlp.fc2.weight"] = (h, 4 * h)
    return s


def unet_shapes(sdxl=True):
    s = {}
    for blk in ("input_blocks.4.1", "middle_block.1", "output_blocks.2.1"):
        for m in range(2):
            p = f"{blk}.transformer_blocks.{m}."
            for a in ("attn1", "attn2"):
                ctx = 32 if a == "attn2" else 64
                s.update({f"{p}{a}.to_q.weight": (64, 64), f"{p}{a}.to_k.weight": (64, ctx),
                          f"{p}{a}.to_v.weight": (64, ctx), f"{p}{a}.to_out.0.weight": (64, 64)})
            s.update({p + "ff.net.0.proj.weight": (512, 64), p + "ff.net.2.weight": (64, 256)})
        s[f"{blk}.proj_in.weight"] = (64, 64, 1, 1)
    if sdxl:
        s["label_emb.0.0.weight"] = (128, 256)
    return s


@pytest.mark.parametrize("prefix", ["", "diffusion_model.", "model.diffusion_model."])
def test_detection_with_any_prefix(prefix):
    assert detect_architecture(prefix + k for k in flux_shapes()) == "flux"
    assert detect_architecture(prefix + k for k in sd3_shapes()) == "sd3"
    assert detect_architecture(prefix + k for k in unet_shapes(True)) == "sdxl"
    assert detect_architecture(prefix + k for k in unet_shapes(False)) == "sd15"
    assert detect_architecture(["foo.weight"]) is None


def test_flux_paper_preset_is_the_papers_set():
    ts = select_targets({"model.diffusion_model." + k: v for k, v in flux_shapes().items()}, "paper")
    # per double block: q,k,v + proj + 2 mlp, for both streams = 12; per single block: q,k,v of linear1 = 3
    assert ts.arch == "flux" and len(ts) == 2 * 12 + 2 * 3
    q = next(t for t in ts if t.name == "single_blocks.1.linear1[v]")
    assert (q.key, q.offset, q.size) == ("single_blocks.1.linear1.weight", 128, 64)
    assert not any("mod.lin" in n or "linear2" in n for n in ts.names())
    assert ts.shapes["single_blocks.0.linear1.weight"] == (3 * 64 + 256, 64)


def test_flux_full_size_paper_set_has_342_targets():
    assert len(select_targets(flux_shapes(h=8, mlp=32, double=19, single=38), "paper")) == 342


def test_flux_presets_nest():
    s = flux_shapes()
    attn = set(select_targets(s, "attention").names())
    full = set(select_targets(s, "attention+mlp").names())
    paper = set(select_targets(s, "paper").names())
    assert attn < paper < full
    assert "single_blocks.0.linear1[mlp]" in full and "single_blocks.0.linear2" in full


def test_sd3_slices_and_pre_only_block():
    ts = select_targets(sd3_shapes(), "paper")
    assert "joint_blocks.2.context_block.attn.qkv[k]" in ts.names()
    assert "joint_blocks.2.context_block.attn.proj" not in ts.names()
    assert len(ts) == 3 * 2 * 4 - 1
    assert len(select_targets(sd3_shapes(), "attention+mlp")) == len(ts) + 5 * 2


def test_unet_paper_readings():
    s = unet_shapes()
    full = select_targets(s, "paper")
    self_only = select_targets(s, "paper-self-attention")
    assert len(full) == 6 * 8 and len(self_only) == 6 * 4
    assert all(".attn1." in n for n in self_only.names())
    assert len(select_targets(s, "attention+mlp")) == 6 * 10


def test_custom_regex_on_known_and_unknown_architectures():
    ts = select_targets(flux_shapes(), "custom", r"img_attn\.qkv\[q\]")
    assert ts.names() == ["double_blocks.0.img_attn.qkv[q]", "double_blocks.1.img_attn.qkv[q]"]
    unknown = {"layers.0.attn.q_proj.weight": (32, 32), "layers.0.attn.k_proj.weight": (32, 32), "emb.weight": (10, 32)}
    ts = select_targets(unknown, "custom", r"q_proj")
    assert ts.arch == "unknown" and ts.names() == ["layers.0.attn.q_proj"]


def test_bad_target_requests_explain_the_fix():
    with pytest.raises(TargetError, match="custom"):
        select_targets({"layers.0.weight": (8, 8)}, "paper")
    with pytest.raises(TargetError, match="selects no weights"):
        select_targets(flux_shapes(), "custom", "nothing_matches_this")
    with pytest.raises(TargetError, match="not 2-D"):
        select_targets(unet_shapes(), "custom", r"proj_in")
    with pytest.raises(TargetError, match="regular expression"):
        select_targets(flux_shapes(), "custom", None)
    with pytest.raises(TargetError, match="paper-self-attention"):
        select_targets(flux_shapes(), "paper-self-attention")
    with pytest.raises(TargetError, match="unknown preset"):
        select_targets(flux_shapes(), "everything")


def test_comfyui_identification_outranks_the_key_rules():
    """ComfyUI's config class decides (its bases stand in for subclasses); one the pack has no table for is
    refused by the presets, named, and left to 'custom'."""
    from qr_core import CoreModel

    shapes = flux_shapes()
    assert detect_architecture(shapes, CoreModel(("SSD1B", "SDXL", "BASE"))) == "sdxl"
    assert detect_architecture(shapes, CoreModel(("FluxSchnell", "Flux", "BASE"), {"image_model": "flux"})) == "flux"
    ovis = CoreModel(("FluxSchnell", "Flux", "BASE"), {"image_model": "flux", "yak_mlp": True})
    assert detect_architecture(shapes, ovis) == "ovis"
    lens = CoreModel(("Lens", "BASE"), {"image_model": "lens"})
    assert detect_architecture(shapes, lens) is None
    with pytest.raises(TargetError, match=r"ComfyUI identifies this model as Lens \(image_model 'lens'\).*custom"):
        select_targets(shapes, "paper", core=lens)
    assert len(select_targets(shapes, "custom", r"img_attn\.qkv", core=lens)) == 2  # whole: no table to slice by


def test_key_rules_tell_apart_the_models_that_reuse_other_keys():
    """Without ComfyUI (the CLI): Ovis' gated MLPs, Lens' gated image MLP, Mage-Flow's and LongCat's shapes."""
    qwen = {"txt_norm.weight": (3584,), "proj_out.weight": (64, 64), "img_in.weight": (64, 64),
            "transformer_blocks.0.attn.to_q.weight": (64, 64)}
    assert detect_architecture(qwen) == "qwen_image"
    assert detect_architecture(dict(qwen, **{"txt_norm.weight": (2560,), "proj_out.weight": (128, 64)})) == "mage_flow"
    assert detect_architecture(dict(qwen, **{"transformer_blocks.0.img_mlp.w1.weight": (256, 64)})) is None
    ovis = dict(flux_shapes(), **{"txt_norm.weight": (64,), "double_blocks.0.img_mlp.gate_proj.weight": (256, 64)})
    assert detect_architecture(ovis) == "ovis"
    assert detect_architecture(dict(flux_shapes(), **{"txt_in.weight": (64, 3584)})) == "longcat"
    flux1 = dict(flux_shapes(), **{"txt_in.weight": (64, 4096), "vector_in.in_layer.weight": (64, 768)})
    assert detect_architecture(flux1) == "flux"
