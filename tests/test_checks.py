import pytest
import torch

import vlmkit.checks
from vlmkit.checks import check_equal, check_true


def test_on_cpu_checks_raise_value_errors_naming_both_counts():
    check_equal(torch.tensor(3), 3, lambda a, e: f"{a} != {e}")
    with pytest.raises(ValueError, match="found 2, expected 3"):
        check_equal(torch.tensor(2), torch.tensor(3), lambda a, e: f"found {a}, expected {e}")
    check_true(torch.tensor(True), "fine")
    with pytest.raises(ValueError, match="not a rectangle"):
        check_true(torch.tensor(False), "not a rectangle")


def test_off_cpu_checks_are_device_assertions_without_counts(monkeypatch):
    monkeypatch.setattr(vlmkit.checks, "host_reads_are_free", lambda tensor: False)
    asserted = []
    monkeypatch.setattr(torch, "_assert_async", lambda condition, message: asserted.append((condition, message)))
    check_equal(torch.tensor(2), torch.tensor(3), lambda a, e: f"found {a}, expected {e}")
    check_true(torch.tensor(False), "not a rectangle")
    (equal, message), (true, message_true) = asserted
    assert not bool(equal) and message == "found ?, expected ? (the same inputs on CPU give the counts)"
    assert not bool(true) and message_true == "not a rectangle"
