"""DivergenceGuard: injected NaN and loss spikes are caught, named, and stop or roll back the run."""

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from vlmkit.training.divergence import DivergenceError, DivergenceGuard


class Regression(L.LightningModule):
    """A linear regression whose loss is multiplied by ``inject[step]`` (NaN, a spike) at chosen steps."""

    def __init__(self, inject=None):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.inject = dict(inject or {})
        self.weights_seen = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        step = self.global_step + 1  # the step this batch completes
        self.weights_seen[step] = self.layer.weight.detach().clone()
        return loss * self.inject.pop(step, 1.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 4, generator=g).repeat(16, 1)  # the same batch every step: a smooth loss curve
        return torch.utils.data.DataLoader(list(zip(x, x.sum(1, keepdim=True))), batch_size=4)


def _fit(module, guard, tmp_path, max_steps=12, checkpoint=None, accumulate_grad_batches=1):
    callbacks = [guard] + ([checkpoint] if checkpoint else [])
    trainer = L.Trainer(
        accumulate_grad_batches=accumulate_grad_batches,
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpoint is not None,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(module)
    return trainer


def test_check_flags_nan_inf_and_spikes_over_the_window():
    guard = DivergenceGuard(window=3, spike_factor=2.0)
    assert guard.check(float("nan"), 1) == "loss is nan at step 1"
    assert guard.check(math.inf, 2) == "loss is inf at step 2"
    assert [guard.check(x, s) for s, x in enumerate([1.0, 1.2, 0.8], 3)] == [None, None, None]
    assert guard.check(1.9, 6) is None  # below 2 x mean(1.0, 1.2, 0.8)
    assert guard.check(2.7, 7) == "loss spike at step 7: 2.7 > 2 x 1.3 (mean of the last 3 steps)"
    with pytest.raises(ValueError, match="action must be"):
        DivergenceGuard(action="ignore")


@pytest.mark.integration
def test_injected_nan_stops_with_step_and_value(tmp_path):
    with pytest.raises(DivergenceError, match=r"stopped training: loss is nan at step 5"):
        _fit(Regression(inject={5: float("nan")}), DivergenceGuard(window=3), tmp_path)


@pytest.mark.integration
def test_injected_spike_stops_and_a_looser_factor_does_not(tmp_path):
    with pytest.raises(DivergenceError, match=r"loss spike at step 8: .* > 3 x .* \(mean of the last 4 steps\)"):
        _fit(Regression(inject={8: 50.0}), DivergenceGuard(window=4, spike_factor=3.0), tmp_path)
    trainer = _fit(Regression(inject={8: 50.0}), DivergenceGuard(window=4, spike_factor=1e6), tmp_path)
    assert trainer.global_step == 12


@pytest.mark.integration
def test_rollback_restores_the_last_checkpoint_and_training_continues(tmp_path):
    module = Regression(inject={7: float("nan")})
    guard = DivergenceGuard(window=3, action="rollback")
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True)
    with pytest.warns(UserWarning, match=r"loss is nan at step 7; rolled back to .*last\.ckpt \(step 6\)"):
        trainer = _fit(module, guard, tmp_path, max_steps=12, checkpoint=checkpoint)
    assert guard.rollbacks == 1 and trainer.global_step == 12
    # step 8 started from the step-6 weights (the weights before step 7's update)
    assert torch.equal(module.weights_seen[8], module.weights_seen[7])
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.integration
def test_rollback_without_checkpoint_and_too_many_rollbacks_stop(tmp_path):
    with pytest.raises(DivergenceError, match="no checkpoint to roll back to"):
        _fit(Regression(inject={3: float("nan")}), DivergenceGuard(action="rollback"), tmp_path)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "c2", every_n_train_steps=1, save_last=True)
    guard = DivergenceGuard(window=2, action="rollback", max_rollbacks=1)
    with pytest.raises(DivergenceError, match=r"after 1 rollbacks: loss is nan at step 6"):
        _fit(Regression(inject={4: float("nan"), 6: float("nan")}), guard, tmp_path, checkpoint=checkpoint)


@pytest.mark.integration
def test_the_guard_judges_each_optimizer_step_once_with_one_collective(tmp_path, monkeypatch):
    """With 4 micro-batches per step: one all-gather per optimizer step (not one all-reduce per micro-batch)."""
    from collections import Counter

    from lightning.pytorch.strategies import SingleDeviceStrategy

    collectives = Counter()
    for name in ("all_gather", "reduce", "reduce_boolean_decision", "broadcast", "barrier"):
        original = getattr(SingleDeviceStrategy, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            collectives[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(SingleDeviceStrategy, name, counted)
    _fit(Regression(), DivergenceGuard(window=2), tmp_path, max_steps=3, accumulate_grad_batches=4)
    with_guard = collectives.copy()
    collectives.clear()
    batches = _CountBatches()
    _fit(Regression(), batches, tmp_path, max_steps=3, accumulate_grad_batches=4)
    assert batches.count == 12
    assert with_guard - collectives == Counter(all_gather=3)  # the guard's own: one per optimizer step
    with pytest.raises(DivergenceError, match=r"stopped training: loss is nan at step 2$"):  # a NaN micro-batch
        _fit(Regression(inject={2: float("nan")}), DivergenceGuard(window=2), tmp_path, 3, accumulate_grad_batches=4)


class _CountBatches(L.Callback):
    def __init__(self):
        self.count = 0

    def on_train_batch_end(self, *args):
        self.count += 1
