"""Errors in what a user gave (a file, a flag, a checkpoint, data) that the ``vlmkit`` command reports as one line.

Each carries a message that names the file, argument or source and says what to do; ``vlmkit`` prints it as
``vlmkit: error: <message>`` and exits with status 1 instead of showing a traceback. Every other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Base of the errors ``vlmkit`` reports as one line (the message names the file or argument at fault)."""


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot be used: empty, truncated, not a checkpoint, or of another model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path that does not exist."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle references objects that loading with ``weights_only=True`` refuses.

    Unpickling such a file can run arbitrary code; it loads only with the explicit opt-in named in the message.
    """
