"""The training loop's schedules, gradient accumulation and exact resume (bare: no ComfyUI)."""

import math

import pytest
import torch

from qr_core import BasisMismatchError, DecomposeSettings, QRAdapter, SettingError, TrainSettings, frozen, get_basis, \
    select_targets, train
from qr_core.errors import DeltaFileError
from qr_core.training.lr_schedules import lr_factor
from qr_core.training.state import TrainState, state_path_for

from qr_testing import TINY


@pytest.fixture
def basis(tiny_weights):
    ts = select_targets({k: v.shape for k, v in tiny_weights.items()}, "paper")
    return get_basis(tiny_weights.__getitem__, ts, DecomposeSettings(rank=6))


@pytest.mark.parametrize("schedule, expected", [
    # steps=10, warm-up 2: steps 0, 1 rise to the full rate; then the decay over the 8 remaining steps.
    ("constant", {0: 0.5, 1: 1.0, 2: 1.0, 9: 1.0}),
    ("cosine", {0: 0.5, 1: 1.0, 2: 1.0, 4: 0.5 * (1 + math.cos(math.pi * 2 / 8)), 6: 0.5, 9: 0.5 * (1 + math.cos(math.pi * 7 / 8))}),
    ("linear", {0: 0.5, 1: 1.0, 2: 1.0, 6: 0.5, 9: 1 / 8}),
])
def test_schedules_give_the_expected_rates(schedule, expected):
    settings = TrainSettings(steps=10, lr=1e-3, lr_schedule=schedule, warmup_steps=2)
    for step, factor in expected.items():
        assert lr_factor(step, 10, schedule, 2) == pytest.approx(factor), (schedule, step)
        assert settings.lr_at(step) == pytest.approx(1e-3 * factor)
    assert TrainSettings(steps=4, lr_schedule="cosine").lr_at(0) == pytest.approx(1e-4)  # no warm-up: full rate first


def test_the_optimizer_steps_at_the_scheduled_rates():
    p = torch.nn.Parameter(torch.zeros(3))
    seen = []
    settings = TrainSettings(steps=6, lr=0.1, optimizer="adam", lr_schedule="linear", warmup_steps=2, grad_clip=0)
    opt_lrs = []
    original = torch.optim.Adam.step

    def loss(step):
        seen.append(step)
        return (p - 1).square().sum()

    def spy(self, *a, **k):
        opt_lrs.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    torch.optim.Adam.step = spy
    try:
        train([p], loss, settings)
    finally:
        torch.optim.Adam.step = original
    assert opt_lrs == pytest.approx([settings.lr_at(s) for s in range(6)])
    assert opt_lrs == pytest.approx([0.05, 0.1, 0.1, 0.075, 0.05, 0.025])


def test_bad_schedule_settings_are_refused():
    with pytest.raises(SettingError, match="schedule"):
        TrainSettings(lr_schedule="step")
    with pytest.raises(SettingError, match="warm-up"):
        TrainSettings(warmup_steps=-1)
    with pytest.raises(SettingError, match="accumulation"):
        TrainSettings(accumulation=0)


def test_accumulating_k_micro_batches_equals_one_step_of_the_k_times_batch(tiny_flux, basis):
    """fp32, the same samples: k accumulated micro-batches of one sample give one step of the batch of k."""
    g = torch.Generator().manual_seed(3)
    k = 3
    x = torch.randn(k, TINY.in_channels, 8, 8, generator=g)
    t = torch.rand(k, generator=g)
    ctx = torch.randn(k, 3, TINY.context_dim, generator=g)
    target = torch.randn_like(tiny_flux(x, t, ctx))

    def run(accumulation):
        adapter = QRAdapter(basis)
        calls = []

        def loss(step):
            if accumulation == 1:
                return (tiny_flux(x, t, ctx) - target).square().mean()
            i = len(calls) % k
            calls.append(i)
            return (tiny_flux(x[i:i + 1], t[i:i + 1], ctx[i:i + 1]) - target[i:i + 1]).square().mean()

        with frozen(tiny_flux), adapter.attached(tiny_flux):
            result = train(adapter.trainable(), loss, TrainSettings(steps=4, lr=1e-2, accumulation=accumulation))
        return result, adapter, calls

    batch, a_batch, _ = run(1)
    accumulated, a_acc, calls = run(k)
    assert calls == [0, 1, 2] * 4  # loss_fn ran k times per optimizer step
    assert accumulated.losses == pytest.approx(batch.losses, rel=1e-5)
    # Adam divides each gradient entry by its own running scale, so an entry whose gradient is near zero
    # turns a float-rounding difference of the summation order (thread split under load) into up to
    # ~1e-6 of ΔR (seen 1.4e-6 with ΔR entries of 0.04); a missing or repeated micro-batch moves ΔR by
    # orders of magnitude more.
    for p, q in zip(a_batch.down, a_acc.down):
        assert torch.allclose(p, q, atol=1e-5, rtol=1e-4)


def noisy_loss(tiny_flux, seed=0):
    """A loss that draws from the global RNG each call (as the ComfyUI trainer draws noise and σ)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, TINY.in_channels, 8, 8, generator=g)
    ctx = torch.randn(2, 3, TINY.context_dim, generator=g)
    target = torch.randn_like(tiny_flux(x, torch.rand(2, generator=g), ctx))

    def loss(step):
        t = torch.rand(2)
        return (tiny_flux(x + 0.1 * torch.randn_like(x), t, ctx) - target).square().mean()
    return loss


@pytest.mark.parametrize("optimizer", ["adamw", "adam"])
def test_resume_from_a_saved_state_repeats_the_uninterrupted_run(tiny_flux, basis, tmp_path, optimizer):
    settings = TrainSettings(steps=8, lr=1e-2, optimizer=optimizer, lr_schedule="cosine", warmup_steps=2,
                             accumulation=2, seed=5)
    loss = noisy_loss(tiny_flux)

    whole = QRAdapter(basis)
    with frozen(tiny_flux), whole.attached(tiny_flux):
        full = train(whole.trainable(), loss, settings)

    class Stop(Exception):
        pass

    first, saved = QRAdapter(basis), {}

    def on_state(capture):
        saved["capture"] = capture

    def cancel_at_4():
        if saved.get("capture") and saved["capture"]().step == 4:
            raise Stop
    with frozen(tiny_flux), first.attached(tiny_flux), pytest.raises(Stop):
        train(first.trainable(), loss, settings, on_state=on_state, check_cancel=cancel_at_4)
    state = saved["capture"]()
    state.identity = {"optimizer": optimizer, "rank": basis.rank}
    path = state.save(state_path_for(tmp_path / "run.safetensors"))
    assert path.name == "run.state.safetensors"

    torch.manual_seed(999)  # whatever the caller's RNG holds: the state's RNG is what continues
    loaded = TrainState.load(path)
    loaded.check_identity({"optimizer": optimizer, "rank": basis.rank})
    assert loaded.step == 4 and loaded.losses == full.losses[:4]
    second = QRAdapter(basis)
    with frozen(tiny_flux), second.attached(tiny_flux):
        rest = train(second.trainable(), loss, settings, resume=loaded)
    assert rest.losses == full.losses[4:]  # bit-identical: same parameters, moments, rates and draws
    assert all(torch.equal(p, q) for p, q in zip(whole.down, second.down))


def test_resume_state_of_another_run_is_refused(tiny_flux, basis, tmp_path):
    adapter = QRAdapter(basis)
    saved = {}
    with frozen(tiny_flux), adapter.attached(tiny_flux):
        train(adapter.trainable(), noisy_loss(tiny_flux), TrainSettings(steps=2, optimizer="adam"),
              on_state=lambda c: saved.update(c=c))
    state = saved["c"]()
    state.identity = {"optimizer": "adam", "rank": 6}
    with pytest.raises(BasisMismatchError, match="optimizer 'adam' there, 'adamw' here"):
        state.check_identity({"optimizer": "adamw", "rank": 6})
    fewer = QRAdapter(basis).trainable()[:-1]
    with pytest.raises(BasisMismatchError, match="other shapes"):
        state.restore(fewer, torch.optim.Adam(fewer))
    not_a_state = tmp_path / "x.safetensors"
    adapter.to_delta().save(not_a_state)
    with pytest.raises(DeltaFileError, match="not a QR-LoRA training state"):
        TrainState.load(not_a_state)
