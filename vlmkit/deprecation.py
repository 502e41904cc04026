"""Renamed arguments and moved modules keep working for one release, with a warning that names the new spelling.

Warnings are ``FutureWarning``s: Python shows those to the people running a program (a ``DeprecationWarning`` is
hidden outside ``__main__``), and a YAML recipe's author is such a person.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

T = TypeVar("T")


def warn_deprecated(message: str, stacklevel: int = 3) -> None:
    """Warn (``FutureWarning``) that something is deprecated and will be removed in the next release."""
    warnings.warn(
        f"{message} (deprecated: it will be removed in the next release)", FutureWarning, stacklevel=stacklevel
    )


def renamed_argument(owner: str, old: str, old_value: T | None, new: str, new_value: T, default: T) -> T:
    """The value of an argument renamed from ``old`` to ``new``: the new one, or the old one (with a warning).

    Args:
        owner: Who takes the argument, for the messages (e.g. ``"TransformersVisionEncoder"``).
        old: The old name; ``old_value`` is ``None`` when it was not given.
        old_value: What was given under the old name.
        new: The new name.
        new_value: What was given under the new name.
        default: The new argument's default (so that giving only the old name is not a conflict).

    Raises:
        ValueError: Naming both when both were given with different values.
    """
    if old_value is None:
        return new_value
    if new_value != default and new_value != old_value:
        raise ValueError(f"{owner}: give {new}={new_value!r} or the old {old}={old_value!r}, not both")
    warn_deprecated(f"{owner}({old}=...) is now {owner}({new}=...)", stacklevel=4)
    return old_value
