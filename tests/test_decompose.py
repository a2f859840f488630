import pytest
import torch

from qr_core import DecomposeSettings, TargetError, captured_energy, decompose, select_targets
from qr_core.bases.decompose import check_basis, energy_check_sample

from qr_testing import power_law


def _single(w, rank, method="exact", **kw):
    ts = select_targets({"layer.weight": tuple(w.shape)}, "custom", "layer")
    q, s = decompose({"layer.weight": w}.__getitem__, ts, DecomposeSettings(rank=rank, method=method, **kw))
    return q["layer"], s["layer"]


def test_exact_matches_algorithm_1_step_by_step():
    """The paper's Algorithm 1, literally, in its own notation (W_paper = Wᵀ, [in, out])."""
    torch.manual_seed(0)
    w = torch.randn(40, 24)  # torch layout [out, in]
    r = 6
    wp = w.T  # paper's W ∈ R^{m×n}, m = in, n = out; the model computes (QR)ᵀ
    U, S, Vh = torch.linalg.svd(wp, full_matrices=False)  # line 1
    w_core = U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]  # line 2
    w_comp = wp - w_core  # line 3
    s_mat = Vh[:r].T @ torch.diag(S[:r])  # line 5: S = V_r Σ_r ∈ R^{n×r}
    t_mat = U[:, :r].T  # T = U_rᵀ ∈ R^{r×m}
    q_s, r_s = torch.linalg.qr(s_mat)  # line 6
    q_paper, r_paper = q_s, r_s @ t_mat  # line 7
    assert torch.allclose(w_comp + (q_paper @ r_paper).T, wp, atol=1e-5)  # line 9 with ΔR = 0

    q, sigma = _single(w, r)
    assert torch.allclose(q, q_paper, atol=1e-5)
    assert torch.allclose(q.T @ w, r_paper, atol=1e-4)  # R = QᵀW
    assert torch.allclose(sigma, S[:r], atol=1e-5)


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_identity_at_zero_delta_for_whole_and_sliced_targets(method, tiny_weights):
    ts = select_targets({k: v.shape for k, v in tiny_weights.items()}, "paper")
    assert any(t.is_slice for t in ts)
    q, _ = decompose(tiny_weights.__getitem__, ts, DecomposeSettings(rank=8, method=method))
    for t in ts:
        w = tiny_weights[t.key][t.rows(tiny_weights[t.key].shape[0])]
        qt = q[t.name]
        assert qt.shape == (w.shape[0], 8)
        assert torch.allclose(qt.T @ qt, torch.eye(8), atol=1e-5)
        r = qt.T @ w
        w_comp = w - qt @ r
        assert torch.allclose(w_comp + qt @ (r + torch.zeros_like(r)), w, atol=1e-5)


def test_fast_captures_99_percent_of_exact_energy_on_realistic_spectra():
    for seed, (m, n) in enumerate([(256, 256), (384, 128), (128, 512)]):
        w = power_law(m, n, alpha=0.5, seed=seed)
        q_exact, s_exact = _single(w, 32, "exact")
        q_fast, _ = _single(w, 32, "fast")
        ratio = float(captured_energy(q_fast, w) / s_exact.square().sum())
        assert ratio >= 0.99, ratio
        assert ratio <= 1 + 1e-5
    # With no power iterations the same matrices fall short: the check can fail.
    q0, _ = _single(power_law(256, 256, seed=0), 32, "fast", power_iters=0, max_power_iters=0, oversample=0)
    _, s_exact = _single(power_law(256, 256, seed=0), 32, "exact")
    assert float(captured_energy(q0, power_law(256, 256, seed=0)) / s_exact.square().sum()) < 0.99


def test_fast_is_deterministic_and_independent_of_batching():
    ws = {f"b{i}.weight": power_law(96, 80, seed=i) for i in range(5)}
    ts = select_targets({k: v.shape for k, v in ws.items()}, "custom", "b")
    s = DecomposeSettings(rank=8, seed=3)
    q1, _ = decompose(ws.__getitem__, ts, s)
    q2, _ = decompose(ws.__getitem__, ts, s, max_batch_bytes=1)  # one target per batch
    for n in q1:
        assert torch.equal(q1[n], q2[n])
    q3, _ = decompose(ws.__getitem__, ts, DecomposeSettings(rank=8, seed=4))
    assert not torch.equal(q1["b0"], q3["b0"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_any_storage_dtype_is_decomposed_in_fp32(dtype):
    w = power_law(64, 48, seed=1).to(dtype)
    q, _ = _single(w, 8, "fast")
    assert q.dtype == torch.float32
    assert torch.allclose(q.T @ q, torch.eye(8), atol=1e-5)


def test_rank_larger_than_target_is_refused_with_the_limit():
    with pytest.raises(TargetError, match=r"at most 16"):
        _single(torch.randn(32, 16), 20)


def test_non_2d_weight_is_refused():
    ts = select_targets({"layer.weight": (8, 8)}, "custom", "layer")
    with pytest.raises(TargetError, match="2-D"):
        decompose({"layer.weight": torch.randn(8, 8, 1, 1)}.__getitem__, ts, DecomposeSettings(rank=2))


def test_check_basis_flags_changed_weights():
    w = power_law(64, 64, seed=2)
    ts = select_targets({"layer.weight": (64, 64)}, "custom", "layer")
    q, s = decompose({"layer.weight": w}.__getitem__, ts, DecomposeSettings(rank=8))
    assert check_basis({"layer.weight": w}.__getitem__, ts, q, s, 8) == []
    other = power_law(64, 64, seed=9)
    problems = check_basis({"layer.weight": other}.__getitem__, ts, q, s, 8)
    assert problems and "energy" in problems[0]


def test_sampled_energy_check_reads_only_its_sample_and_covers_every_shape():
    shapes = {f"l{i}.weight": ((32, 16) if i % 5 else (16, 32)) for i in range(40)}
    weights = {k: power_law(*s, seed=i) for i, (k, s) in enumerate(shapes.items())}
    ts = select_targets(shapes, "custom", r"l\d+")
    q, s = decompose(weights.__getitem__, ts, DecomposeSettings(rank=4))
    sample = energy_check_sample(ts, 6)
    assert len(sample) == 6 and sample == energy_check_sample(ts, 6)
    assert {ts.shapes[t.key] for t in sample} == {(32, 16), (16, 32)}
    read = []

    def get(key):
        read.append(key)
        return weights[key]

    assert check_basis(get, ts, q, s, 4, energy_sample=6) == []
    assert sorted(set(read)) == sorted(t.key for t in sample)
    changed = dict(weights, **{sample[-1].key: power_law(*shapes[sample[-1].key], seed=99)})
    problems = check_basis(changed.__getitem__, ts, q, s, 4, energy_sample=6)
    assert len(problems) == 1 and sample[-1].name in problems[0] and "energy" in problems[0]
    # Orthonormality is checked on every target, sampled or not.
    outside = next(t for t in ts if t not in sample)
    broken = dict(q, **{outside.name: q[outside.name] * 1.1})
    assert "orthonormal" in check_basis(weights.__getitem__, ts, broken, s, 4, energy_sample=6)[0]
