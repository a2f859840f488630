"""K-LoRA's plan against a plain reimplementation of the reference code, and row-side decorrelation of ΔR."""

import math

import pytest
import torch

from qr_core import DecomposeSettings, SettingError, get_basis, merge, select_targets
from qr_core.adapters.delta import random_delta
from qr_core.merging import decorrelate as dec
from qr_core.merging.klora import (KLoRAPlan, balance_factor, klora, klora_plan, scores, step_progress,
                                   time_scale)


# --- the reference (HVision-NKU/K-LoRA klora.py + utils.py), dense ΔW and torch.topk, as written there ---

def reference_gamma(pairs):
    """utils.get_ratio_between_content_and_style: Σ|ΔW_c| / Σ|ΔW_s| per layer, mean, drop ≥ 3·mean, mean."""
    ratios = []
    for (c_up, c_down), (s_up, s_down) in pairs:
        ratios.append(torch.abs(c_up @ c_down).sum().item() / torch.abs(s_up @ s_down).sum().item())
    average = sum(ratios) / len(ratios)
    kept = [r for r in ratios if r < 3 * average]
    return sum(kept) / len(kept) if kept else float("inf")


def reference_uses_content(c, s, gamma, progress, pattern):
    """KLoRALinearLayer.get_klora_weight with time_ratio / sum_timesteps = progress: True where it returns matrix1."""
    (c_up, c_down), (s_up, s_down) = c, s
    alpha, beta = (1.5, 1.5 * 0.85) if pattern == "s*" else (1.5, 0.5)
    k = c_up.shape[1] * s_up.shape[1]
    top_k_sum1 = torch.topk(torch.abs(c_up @ c_down).flatten(), k)[0].sum()
    top_k_sum2 = torch.topk(torch.abs(s_up @ s_down).flatten(), k)[0].sum()
    scale = alpha * progress + beta
    if pattern == "s*":
        scale = scale % alpha
    return bool(top_k_sum1 / gamma / (top_k_sum2 * scale) > 1)


def lora_pair(seed, out, inp, r_c, r_s, c_scale=1.0, s_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    c = (torch.randn(out, r_c, generator=g) * c_scale, torch.randn(r_c, inp, generator=g) * 0.1)
    s = (torch.randn(out, r_s, generator=g) * s_scale, torch.randn(r_s, inp, generator=g) * 0.1)
    return c, s


@pytest.fixture
def layers():
    """Six layers of two LoRAs with different ranks and shapes; content's strength varies so that choices differ."""
    shapes = [(24, 16), (16, 40), (32, 32), (8, 48), (40, 8), (20, 20)]
    strengths = [0.6, 0.9, 1.0, 1.1, 1.4, 3.0]
    content, style = {}, {}
    for i, ((out, inp), c_scale) in enumerate(zip(shapes, strengths)):
        content[f"layer{i}"], style[f"layer{i}"] = lora_pair(i, out, inp, 4, 3, c_scale=c_scale)
    return content, style


@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 22])
def test_chunked_scores_equal_dense_topk(chunk):
    (up, down), _ = lora_pair(0, 37, 23, 5, 2)
    dense = up @ down
    for k in (1, 10, 37 * 23, 10_000):
        top, total = scores((up, down), k, chunk_elements=chunk)
        want = torch.topk(dense.abs().flatten(), min(k, dense.numel()))[0].sum().item()
        assert top == pytest.approx(want, rel=1e-6)
        assert total == pytest.approx(dense.abs().sum().item(), rel=1e-6)
        assert scores(dense, k, chunk_elements=chunk) == pytest.approx((top, total), rel=1e-6)


@pytest.mark.parametrize("pattern", ["s*", "s"])
def test_per_step_choice_equals_the_reference(layers, pattern):
    content, style = layers
    plan = klora_plan(content, style, pattern)
    gamma = reference_gamma([(content[n], style[n]) for n in content])
    assert plan.gamma == pytest.approx(gamma, rel=1e-6)
    steps = 20
    seen = set()
    for n in range(steps):
        progress = n / steps
        got = plan.content_layers(progress)
        want = {name for name in content if reference_uses_content(content[name], style[name], gamma, progress, pattern)}
        assert got == want, (pattern, n)
        seen.add(len(got))
    assert len(seen) > 2, f"the test layers should switch adapters at different steps: {seen}"


def test_choices_do_not_depend_on_lambda(layers):
    content, style = layers
    plan = klora_plan(content, style)
    for lc, ls in ((0.5, 1.0), (2.0, -0.7), (-1.3, 0.2)):
        scaled = klora_plan({n: (u * lc, d) for n, (u, d) in content.items()},
                            {n: (u * ls, d) for n, (u, d) in style.items()})
        for n in range(10):
            assert scaled.content_layers(n / 10) == plan.content_layers(n / 10)


def test_time_scaling_and_constants():
    assert time_scale(0.0) == pytest.approx(1.275)
    assert time_scale(0.1) == pytest.approx(1.425)
    assert time_scale(0.5) == pytest.approx(0.525)  # s*: 1.5·0.5 + 1.275 = 2.025, modulo 1.5
    assert time_scale(0.5, "s") == pytest.approx(1.25)
    assert time_scale(0.5, "s", alpha=2.0, beta=0.0) == pytest.approx(1.0)
    with pytest.raises(SettingError, match="unknown K-LoRA pattern 'z'"):
        time_scale(0.0, "z")
    with pytest.raises(SettingError, match="β ≥ 0"):
        klora_plan({}, {}, beta=-1.0)


def test_balance_factor_drops_outlier_ratios():
    assert balance_factor([(1, 1), (2, 2), (3, 3), (10, 1)]) == pytest.approx(1.0)  # 10 ≥ 3 × 3.25
    assert balance_factor([(1, 2), (3, 2)]) == pytest.approx(1.0)
    assert balance_factor([(1, 0)]) == 1.0  # no ratio at all
    assert balance_factor([(0, 1), (0, 2)]) == math.inf  # every ratio dropped, as the reference


def test_zero_scale_and_zero_scores_follow_the_reference():
    plan = KLoRAPlan({"a": (1.0, 2.0), "b": (0.0, 2.0)}, gamma=1.0, pattern="s", alpha=1.0, beta=0.0)
    assert plan.content_layers(0.0) == {"a"}  # S_s·scale = 0: inf for a, nan for b
    assert plan.content_layers(0.9) == frozenset()


def test_step_progress_from_sigmas():
    sigmas = [10.0, 5.0, 2.0, 1.0, 0.0]
    assert [step_progress(s, sigmas) for s in (10.0, 5.0, 3.0, 2.0, 1.0, 0.5, 20.0)] == \
        [0.0, 0.25, 0.25, 0.5, 0.75, 0.75, 0.0]
    assert step_progress(5.0 * (1 - 1e-7), sigmas) == 0.25  # a float32 round trip of the level
    assert step_progress(1.0, [1.0]) == 0.0


def test_merge_parts_apply_one_adapter_per_planned_layer(layers):
    content, style = layers
    content = dict(content, only_content=lora_pair(9, 8, 8, 2, 2)[0])
    style = dict(style, only_style=lora_pair(10, 8, 8, 2, 2)[1], shared=lora_pair(11, 8, 8, 2, 2)[1])
    content["shared"] = lora_pair(12, 8, 8, 2, 2)[0]
    merged = klora(content, style, 0.8, 1.2, layers={f"layer{i}" for i in range(6)})
    assert set(merged.plan.layers) == {f"layer{i}" for i in range(6)}
    for n in range(8):
        (c, lc), (s, ls) = merged.parts(n / 8)
        assert (lc, ls) == (0.8, 1.2)
        chosen = merged.plan.content_layers(n / 8)
        assert set(c) == chosen | {"only_content", "shared"}
        assert set(s) == ({f"layer{i}" for i in range(6)} - chosen) | {"only_style", "shared"}
        assert all(c[k] is content[k] for k in c) and all(s[k] is style[k] for k in s)


def test_dense_updates_take_their_numerical_rank(layers):
    content, style = layers
    dense_c = {n: u @ d for n, (u, d) in content.items()}
    dense_s = {n: u @ d for n, (u, d) in style.items()}
    low_rank = klora_plan(content, style)
    for plan in (klora_plan(dense_c, dense_s), klora_plan(dense_c, dense_s, ranks=(4, 3))):
        for n in range(10):
            assert plan.content_layers(n / 10) == low_rank.content_layers(n / 10)


# --- row-side decorrelation ---

def test_style_rows_become_orthogonal_to_content_rows():
    g = torch.Generator().manual_seed(0)
    c, s = torch.randn(6, 20, generator=g), torch.randn(6, 20, generator=g)
    new_c, new_s = dec.decorrelate_rows({"t": c}, {"t": s}, dec.STYLE)
    assert new_c["t"] is c and new_s["t"].shape == s.shape
    assert (new_s["t"] @ c.T).abs().max() < 1e-5
    # only the part inside content's row space went: s = new_s + (s − new_s), the removed part is in row(c)
    removed = s - new_s["t"]
    coef = torch.linalg.lstsq(c.T.double(), removed.T.double()).solution
    assert torch.allclose(c.T.double() @ coef, removed.T.double(), atol=1e-5)
    again = dec.decorrelate_rows({"t": c}, new_s, dec.STYLE)[1]
    assert torch.allclose(again["t"], new_s["t"], atol=1e-6)  # a projector: idempotent


def test_content_and_both_modes():
    g = torch.Generator().manual_seed(1)
    c, s = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    new_c, new_s = dec.decorrelate_rows({"t": c}, {"t": s}, dec.CONTENT)
    assert new_s["t"] is s and (new_c["t"] @ s.T).abs().max() < 1e-5
    both_c, both_s = dec.decorrelate_rows({"t": c}, {"t": s}, dec.BOTH)
    assert (both_c["t"] @ s.T).abs().max() < 1e-5 and (both_s["t"] @ c.T).abs().max() < 1e-5
    assert dec.decorrelate_rows({"t": c}, {"t": s}, dec.OFF) == ({"t": c}, {"t": s})
    with pytest.raises(SettingError, match="unknown decorrelation 'sideways'"):
        dec.decorrelate_rows({"t": c}, {"t": s}, "sideways")


def test_rank_deficient_content_projects_onto_its_true_row_space():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(6, 2, generator=g) @ torch.randn(2, 30, generator=g)  # 6 rows, rank 2
    assert dec.row_basis(c).shape == (30, 2)
    s = torch.randn(6, 30, generator=g)
    new_s = dec.decorrelate_rows({"t": c}, {"t": s}, dec.STYLE)[1]["t"]
    assert (new_s @ c.T).abs().max() < 1e-5
    assert (s - new_s).norm() < s.norm()  # most of s lies outside a 2-D subspace of R^30: little is removed
    assert dec.row_basis(torch.zeros(4, 10)).shape == (10, 0)


@pytest.mark.parametrize("lc,ls", [(1.0, 1.0), (0.3, -2.0), (-1.5, 0.7)])
def test_lambda_scales_the_decorrelated_delta(lc, ls):
    g = torch.Generator().manual_seed(3)
    c, s = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    unit_c, unit_s = dec.decorrelate_rows({"t": c}, {"t": s}, dec.BOTH)
    scaled_c, scaled_s = dec.decorrelate_rows({"t": lc * c}, {"t": ls * s}, dec.BOTH)
    assert torch.allclose(scaled_c["t"], lc * unit_c["t"], atol=1e-5)
    assert torch.allclose(scaled_s["t"], ls * unit_s["t"], atol=1e-5)


def test_decorrelated_deltas_per_target_of_a_real_target_set(tiny_weights):
    targets = select_targets({k: v.shape for k, v in tiny_weights.items()}, "paper")
    basis = get_basis(tiny_weights.__getitem__, targets, DecomposeSettings(rank=4))
    content, style = random_delta(basis, 1, 0.1, "c"), random_delta(basis, 2, 0.1, "s")
    content.triangular = style.triangular = True
    before = {n: t.clone() for n, t in style.delta.items()}
    new_c, new_s = dec.decorrelate(content, style, dec.STYLE)
    assert new_c is content and new_s is not style and not new_s.triangular
    assert all(torch.equal(style.delta[n], before[n]) for n in before), "the input ΔR was changed"
    widths = set()
    for t in targets:
        rows, cols = targets.shape(t)
        widths.add(cols)
        assert new_s.delta[t.name].shape == (4, cols) and new_s.delta[t.name].dtype == style.delta[t.name].dtype
        assert (new_s.delta[t.name] @ content.delta[t.name].T).abs().max() < 1e-5
    assert len(widths) > 1, "the target set should have targets of several input widths"
    # through merge: the two updates Q·ΔR read orthogonal inputs, ΔW_c · ΔW_sᵀ = 0
    for tc, ts in zip(merge([new_c], [0.7]), merge([new_s], [1.3])):
        assert (tc.dense() @ ts.dense().T).abs().max() < 1e-5
    content.mode = "qr"
    with pytest.raises(SettingError, match="mode 'qr'"):
        dec.decorrelate(content, style, dec.STYLE)
