"""The procedural world, the shipped world model and encoder, and the disentanglement benchmark at a tiny setting."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qr_core.world import scenes
from qr_core.bases.cache import get_basis
from qr_core.bases.decompose import DecomposeSettings
from qr_core.targets import select_targets
from qr_core.training.loop import TrainSettings
from qr_core.world.encoder import Scorer, load_encoder
from qr_core.world.model import ASSET, encode, flow_loss, generate, load_world_model
from qr_core.world.tasks import content_task, patched_model, train_lora, train_qr

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """These small models run fastest on one thread, and much faster than on two when the cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_world_is_deterministic_and_splits_held_out_concepts():
    a, pa, sa = scenes.batch(range(6))
    b, pb, sb = scenes.batch(range(6))
    assert torch.equal(a, b) and pa == pb and sa == sb
    assert a.shape == (6, 3, scenes.SIZE, scenes.SIZE) and a.min() >= -1 and a.max() <= 1
    assert not set(scenes.HELD_OUT_SHAPES) & set(scenes.SEEN_SHAPES)
    assert not set(scenes.HELD_OUT_STYLES) & set(scenes.SEEN_STYLES)
    seen = {(s.shape, s.style) for s in scenes.batch(range(200))[2]}
    assert all(sh in scenes.SEEN_SHAPES and st in scenes.SEEN_STYLES for sh, st in seen)
    imgs = torch.stack([scenes.render(s, "crimson") for s in scenes.SHAPES])
    assert (imgs[:, None] - imgs[None]).abs().flatten(2).amax(-1).add(torch.eye(len(scenes.SHAPES))).min() > 0.5
    assert scenes.prompt_for("heart", "tiger") == "a heart in tiger style"
    e = encode(["a heart", "a heart"])
    assert torch.equal(e[0], e[1]) and not torch.equal(e[0], encode(["a star"])[0])


def test_pretraining_data_leaves_out_the_held_out_pairs_but_not_their_shapes_and_styles():
    held = set(scenes.HELD_OUT_PAIRS)
    assert all(sh in scenes.SEEN_SHAPES and st in scenes.SEEN_STYLES for sh, st in held)
    assert len({sh for sh, _ in held}) == len(held) == len({st for _, st in held})  # one per shape and per style
    drawn = {(s.shape, s.style) for s in scenes.batch(range(600), exclude=scenes.HELD_OUT_PAIRS)[2]}
    assert not drawn & held
    assert {sh for sh, _ in drawn} == set(scenes.SEEN_SHAPES) and {st for _, st in drawn} == set(scenes.SEEN_STYLES)
    # without `exclude` the same seeds draw what they always drew
    assert [s.prompt for s in scenes.batch(range(20))[2]] == [scenes.sample(i).prompt for i in range(20)]


def test_world_draws_upright_shapes_and_a_rotation_changes_only_the_angle():
    upright = [scenes.sample(i) for i in range(32)]
    rotated = [scenes.sample(i, rotation=30.0) for i in range(32)]
    assert all(s.pose.angle == 0 for s in upright)
    assert max(abs(s.pose.angle) for s in rotated) > 15 and all(abs(s.pose.angle) <= 30 for s in rotated)
    # only the angle differs: a seed keeps its shape, style, prompt, size and place
    assert [(s.shape, s.style, s.prompt, s.pose.scale, s.pose.dx) for s in upright] == \
        [(s.shape, s.style, s.prompt, s.pose.scale, s.pose.dx) for s in rotated]
    # the shipped model's file says which world it learnt
    from safetensors import safe_open

    with safe_open(str(ASSET), "pt") as f:
        world = json.loads(f.metadata()["world"])
    assert world["rotation"] == scenes.ROTATION and [list(p) for p in scenes.HELD_OUT_PAIRS] == world["held_out_pairs"]
    # and the encoder learnt rotated shapes, a wider world than the one it judges
    from qr_core.world.encoder import ASSET as ENCODER, ENCODER_ROTATION

    with safe_open(str(ENCODER), "pt") as f:
        assert json.loads(f.metadata()["info"])["rotation"] == ENCODER_ROTATION > scenes.ROTATION


def test_composition_scores_of_the_base_on_pairs():
    from qr_core.world.model import composition_scores

    model, _ = load_world_model()
    res = composition_scores(model, scenes.HELD_OUT_PAIRS[:2], Scorer(), n=2, steps=4)
    assert set(res["per_pair"]) == {"circle/ocean", "square/mint"}
    assert all(0 <= res[k] <= 1 for k in ("p_shape", "p_style", "shape_acc", "style_acc"))
    assert res["p_style"] == pytest.approx(sum(v["p_style"] for v in res["per_pair"].values()) / 2)


def test_shipped_model_meets_the_composition_target():
    """Issue 23's target, measured as in bench/results/world_model.md: combinations pretraining never showed."""
    from qr_core.world.model import composition_scores

    res = composition_scores(load_world_model()[0], scenes.HELD_OUT_PAIRS, Scorer(), n=8)
    assert res["p_shape"] >= 0.9 and res["p_style"] >= 0.9, res


def test_files_of_another_world_are_refused_with_the_fix(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from qr_core.errors import SettingError
    from qr_core.world.encoder import ASSET as ENCODER

    for path, key, older in ((ASSET, "world", lambda m: m.replace('"bar"', '"hexagon"')),
                             (ENCODER, "shapes", lambda m: m.replace('"bar"', '"hexagon"'))):
        with safe_open(str(path), "pt") as f:
            meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
        meta[key] = older(meta[key])
        save_file(tensors, tmp_path / path.name, meta)
        with pytest.raises(SettingError, match="hexagon") as err:
            (load_world_model if path == ASSET else load_encoder)(tmp_path / path.name)
        assert "pretrain" in str(err.value) or "retrain" in str(err.value)


def test_shipped_encoder_knows_the_world():
    enc = load_encoder()
    x, _, samples = scenes.batch(range(-64, 0), shapes=scenes.SHAPES, styles=tuple(scenes.STYLES))
    with torch.no_grad():
        ls, lt = enc(x)
    assert (ls.argmax(1) == torch.tensor([scenes.SHAPES.index(s.shape) for s in samples])).float().mean() > 0.9
    assert (lt.argmax(1) == torch.tensor([list(scenes.STYLES).index(s.style) for s in samples])).float().mean() > 0.9


def test_shipped_model_draws_the_prompted_shape():
    model, meta = load_world_model()
    assert ASSET.stat().st_size <= 20 * 2**20
    assert {"command", "machine", "steps", "seed"} <= set(meta)
    scorer = Scorer()
    # moon and ring are the shapes the small model draws best (see bench/results/world_model_samples.png)
    a, b = "a moon in mint style", "a ring in mint style"
    imgs = generate(model, [a] * 4 + [b] * 4, seed=0, steps=16)
    _, _, p_shape, p_style = scorer.embed(imgs)
    mo, ri = scenes.SHAPES.index("moon"), scenes.SHAPES.index("ring")
    assert p_shape[:4, mo].mean() > p_shape[4:, mo].mean() + 0.3
    assert p_shape[4:, ri].mean() > p_shape[:4, ri].mean() + 0.3
    assert p_style[:, list(scenes.STYLES).index("mint")].mean() > 0.8


def test_short_fine_tune_lowers_the_loss_for_both_adapters():
    torch.manual_seed(0)
    model, _ = load_world_model()
    weights = dict(model.state_dict())
    targets = select_targets({k: v.shape for k, v in weights.items()}, "paper")
    basis = get_basis(weights.__getitem__, targets, DecomposeSettings(rank=8, method="exact"), None)
    task = content_task("heart")
    x0 = task.image[None].expand(8, -1, -1, -1)
    ctx = encode([task.prompt] * 8)

    def loss(m):
        with torch.no_grad():
            return float(flow_loss(m, x0, ctx, torch.Generator().manual_seed(7)))

    before = loss(model)
    ts = TrainSettings(steps=30, lr=3e-3)
    for trained in (train_qr(model, basis, task, ts), train_lora(model, targets, 8, task, ts)):
        after = loss(patched_model(model, targets, [(trained.updates, 1.0)]))
        assert after < 0.9 * before, (before, after)
    assert torch.equal(model.state_dict()["double_blocks.0.img_attn.qkv.weight"],
                       weights["double_blocks.0.img_attn.qkv.weight"])


def load_bench():
    spec = importlib.util.spec_from_file_location("disentangle", ROOT / "bench" / "disentangle.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["disentangle"] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def test_disentangle_benchmark_runs_at_a_quick_setting(tmp_path):
    bench = load_bench()
    res = bench.main(["--quick", "--out", str(tmp_path), "--prefix", "t"])
    md = (tmp_path / "t.md").read_text()
    assert "## Fronts" in md and "ΔR addition at (1, 1)" in md and "Minus LoRA addition" in md
    assert (tmp_path / "t_grid.png").stat().st_size > 0
    # matplotlib is the bench extra (.ci/run installs it); without it the tables are still written
    assert (tmp_path / "t_fronts.png").exists() == (importlib.util.find_spec("matplotlib") is not None)
    js = json.loads((tmp_path / "t.json").read_text())
    assert {"base model (no adapter)", "LoRA addition at (1, 1)", "ΔR addition at (1, 1)"} <= set(js["table"])
    assert res["params"]["QR-LoRA ΔR"] < res["params"]["LoRA"]
    best = js["selection"]["best"]
    assert set(best) == {"QR-LoRA ΔR", "LoRA"} and all(set(b) == {"schedule", "blocks"} for b in best.values())
    assert {p[:2] for p in map(tuple, js["selection"]["pairs"])}.isdisjoint({p[:2] for p in map(tuple, js["pairs"])})
    modes = set(js["modes"])
    assert {"LoRA addition", "ΔR addition", "ZipLoRA"} <= modes and sum("λ over steps" in m for m in modes) == 2
    # every mode swept over the whole grid for every pair × seed, and a front with an interval per threshold
    assert len(js["sweep"]) == len(modes) * len(js["grid"]) ** 2 * len(js["units"])
    for kind in ("p", "sim"):
        for m, v in js["fronts"][kind].items():
            assert all(lo - 1e-9 <= f <= hi + 1e-9 for f, lo, hi in zip(v["front"], v["lo"], v["hi"]))
            assert ("vs_baseline" in v) == (m != "LoRA addition")


def test_front_takes_the_best_shape_among_points_reaching_the_style_threshold():
    bench = load_bench()
    style = np.array([0.95, 0.7, 0.4])
    shape = np.array([0.1, 0.6, 0.9])
    assert bench.front_values(style, shape, (0.3, 0.5, 0.9, 0.99)).tolist() == [0.9, 0.6, 0.1, 0.0]


def test_pretraining_resume_state_round_trips_without_pickles(tmp_path):
    from qr_core.world.mini_flux import MiniFlux
    from qr_core.world.model import load_resume_state, save_resume_state
    from qr_testing import TINY

    torch.manual_seed(0)
    model = MiniFlux(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = (torch.randn(1, TINY.in_channels, 8, 8), torch.rand(1), torch.randn(1, 3, TINY.context_dim))
    model(*x).square().mean().backward()
    opt.step()
    ema = {k: v.detach() * 0.5 for k, v in model.state_dict().items()}
    path = tmp_path / "resume.ckpt"
    save_resume_state(path, model, ema, opt, step=7, seconds=12.5)
    from qr_core.files import read_header
    read_header(path)  # a whole safetensors file, not a pickle

    torch.manual_seed(1)
    model2 = MiniFlux(TINY)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    ema2: dict = {}
    assert load_resume_state(path, model2, ema2, opt2) == (7, 12.5)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert all(torch.equal(ema[k], ema2[k]) for k in ema)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    assert all(torch.equal(torch.as_tensor(s1[i][n]), torch.as_tensor(s2[i][n])) for i in s1 for n in s1[i])


def test_world_sampler_follows_the_schedule_rule():
    """Each Euler step samples the model of the schedule point active at its t (Schedule.index_at, t = 1 − progress)."""
    from qr_core.merging.lambda_schedule import resolve_schedule
    from qr_core.world.tasks import sample_images, scheduled_models

    model, _ = load_world_model()
    weights = model.state_dict()
    targets = select_targets({k: v.shape for k, v in weights.items()}, "paper")
    g = torch.Generator().manual_seed(0)
    content = {t.name: 0.05 * torch.randn(targets.shape(t), generator=g) for t in targets}
    style = {t.name: 0.05 * torch.randn(targets.shape(t), generator=g) for t in targets}
    plan = resolve_schedule("custom", "0: 1, 0; 0.5: 0, 2")
    model_at = scheduled_models(model, targets, content, style, 0.5, 1.0, plan)
    calls = []
    steps = 4
    sample_images(model, "a heart", 1, seed=0, steps=steps, model_at=lambda t: calls.append(t) or model_at(t))
    assert calls == [1.0, 0.75, 0.5, 0.25]
    first, late = model_at(1.0), model_at(0.5)
    assert model_at(0.75) is first and model_at(0.25) is late  # one copy per point
    key, t0 = targets.targets[0].key, targets.targets[0]
    rows = t0.rows(weights[key].shape[0])
    assert torch.allclose(first.state_dict()[key][rows], weights[key][rows] + 0.5 * content[t0.name], atol=1e-6)
    assert torch.allclose(late.state_dict()[key][rows], weights[key][rows] + 2.0 * style[t0.name], atol=1e-6)
    constant = scheduled_models(model, targets, content, style, 1.0, 1.0, resolve_schedule("constant"))
    plain = patched_model(model, targets, [(content, 1.0), (style, 1.0)])
    assert torch.equal(sample_images(model, "a heart", 1, seed=0, steps=3, model_at=constant),
                       sample_images(plain, "a heart", 1, seed=0, steps=3))


def test_pretraining_can_start_from_a_world_model_file_of_the_same_shape(tmp_path):
    import dataclasses
    import json

    from qr_core.errors import SettingError
    from qr_core.world.model import WORLD_CONFIG, PretrainSettings, pretrain

    small = dataclasses.replace(WORLD_CONFIG, hidden=16, heads=2, depth=1, depth_single=1)
    # another seed than the continued run's, so that a start from scratch could not pass for one from `first`
    first = pretrain(tmp_path / "a.safetensors", PretrainSettings(steps=1, batch=2, warmup=1, seed=5), config=small,
                     log=lambda m: None, sample_every=1000)
    # a vanishing LR and no EMA memory: the continued model is the file it started from
    grown = pretrain(tmp_path / "b.safetensors", PretrainSettings(steps=1, batch=2, lr=1e-12, warmup=1, ema=0.0),
                     config=small, log=lambda m: None, sample_every=1000, init=first)
    (a, _), (b, meta) = load_world_model(first), load_world_model(grown)
    assert all(torch.allclose(x, y, atol=1e-3) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert json.loads(meta["init"])["steps"] == "1"  # the recipe names what it grew from
    with pytest.raises(SettingError, match="another shape"):
        pretrain(tmp_path / "c.safetensors", PretrainSettings(steps=1, batch=2), config=WORLD_CONFIG,
                 log=lambda m: None, sample_every=1000, init=first)
