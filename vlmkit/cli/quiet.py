"""Known-harmless third-party messages that ``vlmkit`` (the command line only) does not show.

Installed by :func:`vlmkit.cli.main.main` before a command runs, never at import of the library: a user of vlmkit in
Python keeps every warning. Each entry names a message that says nothing about the user's run:

- Lightning's tips to install litlogger / litmodels (a product suggestion printed at every run);
- Lightning's ``isinstance(treespec, LeafSpec)`` deprecation (inside Lightning's own code, torch >= 2.10);
- torchdata's call of the deprecated ``torch.set_vital`` (inside torchdata's ``StatefulDataLoader``);
- bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (an optional CPU kernel package);
- ModelCheckpoint's "dirpath has changed" on resume and "Checkpoint directory ... exists and is not empty": ``vlmkit
  fit`` checkpoints to one folder per run and says itself whether it resumes or replaces what is there.
"""

from __future__ import annotations

import logging
import warnings

WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"'set_vital' is deprecated",
    r"The dirpath has changed from",
    r"Checkpoint directory .* exists and is not empty",
)
"""``warnings`` messages (regular expressions matched at the start) that the command line ignores."""

LOG_MESSAGES = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
}
"""``logging`` records (logger name -> message prefixes) that the command line drops."""


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.prefixes)


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name, prefixes in LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
