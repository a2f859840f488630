import pytest
import torch

from qr_core import (BasisMismatchError, DecomposeSettings, NonFiniteLossError, QRAdapter, SettingError, TrainSettings,
                     frozen, get_basis, merge, select_targets, train)
from qr_core.merging.merge import add_to_weights
from qr_core.world.mini_flux import MiniFlux

from qr_testing import TINY


@pytest.fixture
def basis(tiny_weights):
    ts = select_targets({k: v.shape for k, v in tiny_weights.items()}, "paper")
    return get_basis(tiny_weights.__getitem__, ts, DecomposeSettings(rank=6))


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, TINY.in_channels, 8, 8, generator=g), torch.rand(2, generator=g),
            torch.randn(2, 3, TINY.context_dim, generator=g))


def randomize(adapter, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.down:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def dense_model(weights, delta):
    m = MiniFlux(TINY).eval()
    m.load_state_dict(add_to_weights(weights, ((t.target, t.dense()) for t in merge([delta], [1.0]))))
    return m


def test_bypass_forward_equals_dense_weights(tiny_flux, tiny_weights, basis):
    adapter = QRAdapter(basis)
    randomize(adapter)
    x = inputs()
    with adapter.attached(tiny_flux):
        y = tiny_flux(*x)
    y_dense = dense_model(tiny_weights, adapter.to_delta())(*x)
    assert torch.allclose(y, y_dense, atol=1e-5)


def test_zero_delta_is_the_base_model_and_detach_is_bit_exact(tiny_flux, basis):
    x = inputs()
    before = tiny_flux(*x)
    adapter = QRAdapter(basis)
    with adapter.attached(tiny_flux):
        assert torch.allclose(tiny_flux(*x), before, atol=1e-6)
        randomize(adapter)
        assert not torch.allclose(tiny_flux(*x), before, atol=1e-3)
    assert torch.equal(tiny_flux(*x), before)
    assert not any(m._forward_hooks for m in tiny_flux.modules())


def test_gradient_is_q_transpose_times_weight_gradient(tiny_flux, tiny_weights, basis):
    adapter = QRAdapter(basis)
    randomize(adapter)
    x = inputs()
    with frozen(tiny_flux), adapter.attached(tiny_flux):
        tiny_flux(*x).square().mean().backward()
    assert all(p.grad is None for p in tiny_flux.parameters())  # no dense weight gradients
    assert all(p.requires_grad for p in tiny_flux.parameters())  # flags restored afterwards
    dense = dense_model(tiny_weights, adapter.to_delta())
    dense(*x).square().mean().backward()
    for i, t in enumerate(adapter.targets):
        grad_w = dict(dense.named_parameters())[t.key].grad
        expected = basis.q[t.name].T @ grad_w[t.rows(grad_w.shape[0])]
        assert torch.allclose(adapter.down[i].grad, expected, atol=1e-6, rtol=1e-4), t.name


def official_basis(w: torch.Tensor, rank: int) -> torch.Tensor:
    """The official code's Q (custom_delta_r_triu_lora.py): reduced QR of W_core = U_r·diag(S_r)·V_rᵀ, first r columns."""
    u, sv, vh = torch.linalg.svd(w.double(), full_matrices=False)
    q, _ = torch.linalg.qr((u[:, :rank] * sv[:rank]) @ vh[:rank])
    return q[:, :rank]


def test_triangular_update_lies_in_the_official_constraint_set(tiny_flux, tiny_weights):
    """With the mask, Q·ΔR = Q_off·T with T upper-triangular, Q_off built here the official way (exact basis,
    so the spans coincide); the file's ΔR itself lives in the paper's Q and need not be triangular there."""
    targets = select_targets({k: v.shape for k, v in tiny_weights.items()}, "paper")
    basis = get_basis(tiny_weights.__getitem__, targets, DecomposeSettings(rank=6, method="exact"))
    adapter = QRAdapter(basis, triangular=True, get_weight=tiny_weights.__getitem__)
    x = inputs()
    with frozen(tiny_flux), adapter.attached(tiny_flux):
        train(adapter.trainable(), lambda s: tiny_flux(*x).square().mean(), TrainSettings(steps=5, lr=1e-2))
    delta = adapter.to_delta()
    assert delta.triangular and delta.triangular_basis == "official"
    not_triangular_in_q = 0
    for t in targets:
        w = tiny_weights[t.key][t.rows(tiny_weights[t.key].shape[0])]
        update = (delta.q[t.name] @ delta.delta[t.name]).double()
        q_off = official_basis(w, 6)
        coords = q_off.T @ update  # the update in the official basis: upper-triangular up to column signs
        assert torch.allclose(q_off @ coords, update, atol=1e-6), t.name  # inside span(Q_off)
        scale = float(coords.abs().amax())
        assert scale > 0 and float(coords.tril(-1).abs().amax()) < 1e-4 * scale, t.name
        d = delta.delta[t.name]
        not_triangular_in_q += float(d.tril(-1).abs().amax()) > 1e-3 * float(d.abs().amax())
    assert not_triangular_in_q > 0  # the two bases really differ: the old mask in Q was another constraint


def test_triangular_needs_the_weights_and_refuses_a_non_triangular_resume(tiny_flux, tiny_weights, basis):
    with pytest.raises(SettingError, match="get_weight"):
        QRAdapter(basis, triangular=True)
    free = QRAdapter(basis)
    randomize(free)
    with pytest.raises(BasisMismatchError, match="not upper-triangular"):
        QRAdapter(basis, triangular=True, get_weight=tiny_weights.__getitem__, init=free.to_delta())


def test_q_and_r_mode_starts_at_the_base_model_and_trains(tiny_flux, tiny_weights, basis):
    x = inputs()
    before = tiny_flux(*x).detach()
    adapter = QRAdapter(basis, mode="qr", get_weight=tiny_weights.__getitem__)
    with frozen(tiny_flux), adapter.attached(tiny_flux):
        assert torch.allclose(tiny_flux(*x), before, atol=1e-5)
        r = train(adapter.trainable(), lambda s: (tiny_flux(*x) - 1).square().mean(), TrainSettings(steps=30, lr=1e-3))
        y = tiny_flux(*x).detach()
    assert r.losses[-1] < r.losses[0]
    delta = adapter.to_delta()
    assert delta.mode == "qr" and delta.q[basis.targets.names()[0]].shape[1] == 2 * basis.rank
    assert delta.basis_fingerprint != basis.fingerprint  # a trained Q cannot be summed with ΔR of Q₀
    assert torch.allclose(dense_model(tiny_weights, delta)(*x), y, atol=1e-4)


def test_training_lowers_the_loss_and_repeats_with_the_seed(tiny_flux, basis):
    x = inputs()
    target = torch.randn_like(tiny_flux(*x))

    def run():
        adapter = QRAdapter(basis)
        with frozen(tiny_flux), adapter.attached(tiny_flux):
            noise = lambda s: (tiny_flux(*x) - target + 0.01 * torch.randn_like(target)).square().mean()
            return train(adapter.trainable(), noise, TrainSettings(steps=40, lr=2e-2, seed=7)), adapter

    (r1, a1), (r2, a2) = run(), run()
    assert r1.losses[-1] < 0.8 * r1.losses[0]
    assert r1.losses == r2.losses
    assert all(torch.equal(p, q) for p, q in zip(a1.down, a2.down))


def test_nan_loss_stops_and_keeps_the_last_good_delta(tiny_flux, basis):
    adapter = QRAdapter(basis)
    x = inputs()
    seen = []
    with frozen(tiny_flux), adapter.attached(tiny_flux):
        def loss(step):
            out = tiny_flux(*x).square().mean()
            return out * float("nan") if step == 3 else out

        def on_step(step, value):
            seen.append([p.detach().clone() for p in adapter.down])

        with pytest.raises(NonFiniteLossError, match="step 4.*after step 2") as err:
            train(adapter.trainable(), loss, TrainSettings(steps=10, lr=1e-2), on_step=on_step)
    assert (err.value.step, err.value.last_good_step) == (4, 2)
    assert len(seen) == 3  # after steps 1, 2, 3; the loss of step 3's result was NaN
    assert all(torch.equal(p, q) for p, q in zip(adapter.down, seen[1]))


def test_cancel_stops_within_one_step(tiny_flux, basis):
    adapter = QRAdapter(basis)
    x = inputs()
    steps = []

    class Cancelled(Exception):
        pass

    def check():
        if len(steps) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        with frozen(tiny_flux), adapter.attached(tiny_flux):
            train(adapter.trainable(), lambda s: tiny_flux(*x).square().mean(), TrainSettings(steps=50),
                  on_step=lambda s, v: steps.append(s), check_cancel=check)
    assert steps == [1, 2]
    assert not any(m._forward_hooks for m in tiny_flux.modules())


def test_resume_requires_the_same_basis(tiny_flux, tiny_weights, basis):
    adapter = QRAdapter(basis)
    randomize(adapter)
    d = adapter.to_delta()
    resumed = QRAdapter(basis, init=d)
    assert all(torch.equal(a, b) for a, b in zip(adapter.down, resumed.down))
    d.basis_fingerprint = "elsewhere"
    with pytest.raises(BasisMismatchError, match="another basis"):
        QRAdapter(basis, init=d)
