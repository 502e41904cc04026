"""Input checks: arguments (a ``ValueError`` naming them), and tensors without stalling an accelerator.

Reading a tensor on the host (``int(t)``, ``bool(t)``, ``t.tolist()``) waits for every kernel queued before it, so a
check in every forward pass would keep a GPU idle while Python catches up. On CPU such reads cost nothing, and
checks raise ``ValueError`` at once with the numbers that disagree. On other devices a check is queued as a
device-side assertion (``torch._assert_async``): no synchronisation, the run still stops at the next one, and the same
inputs on CPU give the detailed message.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def check_fraction(name: str, value: float) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``0 <= value <= 1`` (a probability, a share)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_image_sizes(min_image_size: int | None, max_image_size: int) -> None:
    """Raise ``ValueError`` naming both when the shortest-side target exceeds the longest-side cap."""
    if min_image_size is not None and min_image_size > max_image_size:
        raise ValueError(f"min_image_size={min_image_size} exceeds max_image_size={max_image_size}")


def host_reads_are_free(tensor: torch.Tensor) -> bool:
    """Whether reading ``tensor``'s values on the host costs no device synchronisation (CPU tensors)."""
    return tensor.device.type == "cpu"


def check_equal(actual: torch.Tensor, expected: torch.Tensor | int, describe: Callable[[object, object], str]) -> None:
    """Check that the count ``actual`` (a 0-d tensor) equals ``expected``.

    Args:
        actual: A 0-d integer tensor.
        expected: A 0-d integer tensor or an int.
        describe: Builds the error message from both counts, e.g. ``lambda a, e: f"{a} != {e}"`` (given ``"?"``
            for both off CPU, where the counts are not read).

    Raises:
        ValueError: ``describe(actual, expected)``, on CPU; elsewhere a device-side assertion fails later.
    """
    if host_reads_are_free(actual):
        actual_, expected_ = int(actual), int(expected)
        if actual_ != expected_:
            raise ValueError(describe(actual_, expected_))
        return
    torch._assert_async(actual == expected, describe("?", "?") + " (the same inputs on CPU give the counts)")


def check_true(condition: torch.Tensor, message: str) -> None:
    """Check a 0-d bool ``condition``: ``ValueError(message)`` on CPU, a device-side assertion elsewhere."""
    if host_reads_are_free(condition):
        if not bool(condition):
            raise ValueError(message)
        return
    torch._assert_async(condition, message)
