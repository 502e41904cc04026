"""``LossSpikeMarkers``: a spike is marked at its step with the guard's rule, read from the device in batches."""

from types import SimpleNamespace

import torch

from vlmkit.training.loss_spikes import LossSpikeMarkers


class _Logger:
    def __init__(self):
        self.metrics, self.texts = [], []
        self.experiment = SimpleNamespace(add_text=lambda tag, text, step: self.texts.append((tag, text, step)))

    def log_metrics(self, metrics, step):
        self.metrics.append((step, metrics))


def _run(losses, accumulate=1, every=4):
    logger = _Logger()
    trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=accumulate, log_every_n_steps=every,
                              loggers=[logger])  # fmt: skip
    markers = LossSpikeMarkers(window=3, spike_factor=2.0)
    markers.on_train_start(trainer, None)
    for loss in losses:
        markers.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss / accumulate)}, None, 0)
    markers.on_train_end(trainer, None)
    return markers, logger


def test_a_spike_is_marked_at_its_step():
    markers, logger = _run([1.0, 1.0, 1.0, 1.1, 5.0, 1.0, 1.0, float("nan"), 1.0])
    assert [step for step, _ in logger.metrics] == [5, 8]
    assert logger.metrics[0][1] == {"train/loss_spike": 5.0, "train/loss_spikes": 1}
    assert logger.metrics[1][1]["train/loss_spikes"] == 2
    assert "loss spike at step 5: 5 > 2 x" in markers.spikes[0] and "loss is nan at step 8" in markers.spikes[1]
    assert [t[2] for t in logger.texts] == [5, 8] and logger.texts[0][0] == "train/loss_spikes"


def test_micro_batches_of_one_step_are_judged_together():
    # 2 micro-batches per optimizer step: step 3's mean (1 + 9) / 2 = 5 is the spike
    markers, logger = _run([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0], accumulate=2)
    assert [step for step, _ in logger.metrics] == [5] and logger.metrics[0][1]["train/loss_spike"] == 5.0


def test_losses_stay_on_the_device_until_a_batch_of_steps_is_full():
    markers, logger = _run([1.0, 1.0, 1.0, 1.0])
    assert markers._steps == {}  # judged at train end
    trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=1, log_every_n_steps=10, loggers=[])
    markers = LossSpikeMarkers()
    markers.on_train_start(trainer, None)
    for _ in range(5):
        markers.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, None, 0)
    assert len(markers._steps) == 5  # nothing read yet
    assert markers.state_dict() == {"spikes": []}
