import pytest
from torch import nn

from vlmkit.trainability import apply_trainability, count_parameters, parameter_table, temporarily_frozen


def test_apply_trainability_and_counts_share_tied_weights_once():
    model = nn.Module()
    model.a = nn.Linear(3, 4)  # 16 parameters
    model.b = nn.Linear(4, 3, bias=False)  # 12
    model.c = nn.Linear(4, 3, bias=False)
    model.c.weight = model.b.weight  # tied: counted once
    apply_trainability(model.a, "frozen", "train_a")
    assert count_parameters(model) == 28 and count_parameters(model, trainable_only=True) == 12
    table = parameter_table(model, ("a", "b", "missing"))
    assert table.splitlines()[1].split() == ["a", "16", "0"]
    assert table.splitlines()[-1].split() == ["total", "28", "12"]
    assert "missing" not in table
    with pytest.raises(ValueError, match="train_a='half'"):
        apply_trainability(model.a, "half", "train_a")


def test_temporarily_frozen_restores_each_parameters_flag_even_after_an_error():
    module = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    module[0].weight.requires_grad_(False)  # a mix of frozen and trainable parameters
    before = [p.requires_grad for p in module.parameters()]
    with pytest.raises(RuntimeError, match="inside"), temporarily_frozen(module):
        assert not any(p.requires_grad for p in module.parameters())
        raise RuntimeError("inside")
    assert [p.requires_grad for p in module.parameters()] == before == [False, True, True, True]
