import pytest
import torch

from vlmkit.training.validation_metrics import TaskAccuracy, WeightedMean


def test_weighted_mean_ignores_zero_weight_rows_and_keeps_nan_visible():
    mean = WeightedMean()
    mean.update(torch.tensor([1.0]), torch.tensor([1.0]))
    mean.update(torch.tensor([5.0]), torch.tensor([0.0]))  # a padding row
    mean.update(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert mean.compute().item() == pytest.approx(2 / 3)
    mean.update(torch.tensor(float("nan")), torch.tensor(1.0))
    assert torch.isnan(mean.compute())


def test_task_accuracy_counts_real_rows_per_task_in_name_order():
    accuracy = TaskAccuracy()
    accuracy.update(["shape", "color", "color"], torch.tensor([False, True, True]), [False, False, True])
    accuracy.update(["color", "count"], torch.tensor([False, True]))
    assert accuracy.compute() == {"color": 0.5, "count": 1.0, "shape": 0.0}
    accuracy.reset()
    assert accuracy.compute() == {}
