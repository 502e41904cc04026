"""Counters of good and bad samples per source, shared by all dataloader workers.

The counts live in one shared-memory tensor ``[readers, columns]`` created in the main process
before the workers start; each worker writes only its own row (no locks, no lost updates), and the
main process sums the rows whenever it logs. Nothing travels inside batches, so counts of samples
that never reach a batch (a bad sample at the end of a stream, an empty shard) are not lost.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import torch

from vlmkit.data.formats import BadSample

REASONS: tuple[str, ...] = (
    "corrupt_image",
    "missing_image",
    "extreme_aspect_ratio",
    "too_many_pixels",
    "missing_field",
    "bad_layout",
    "bad_json",
    "non_utf8_text",
    "truncated_tar",
    "empty_shard",
    "missing_shard",
    "too_long",
    "render_error",
    "unknown_format",
)
"""Why a sample was skipped (see :class:`~vlmkit.data.formats.BadSample`)."""

GOOD = ("ok", "dropped_images")
"""Per-source counts of used samples, and of images dropped by truncation from used samples."""


class DataStats:
    """Shared counters ``source/reason`` for ``num_readers`` readers (dataloader workers, or 1).

    Args:
        sources: Source names.
        num_readers: Rows: one per dataloader worker (``max(1, num_workers)``).
    """

    def __init__(self, sources: Sequence[str], num_readers: int) -> None:
        self.sources = tuple(sources)
        self.columns = tuple(f"{s}/{r}" for s in self.sources for r in (*GOOD, *REASONS))
        self._index = {c: i for i, c in enumerate(self.columns)}
        self.counts = torch.zeros(max(1, num_readers), len(self.columns), dtype=torch.int64).share_memory_()

    def add(self, reader: int, source: str, reason: str, n: int = 1) -> None:
        """Add ``n`` to ``source/reason`` in ``reader``'s row (unknown reasons count as ``render_error``)."""
        column = self._index.get(f"{source}/{reason}", self._index[f"{source}/render_error"])
        self.counts[reader % self.counts.shape[0], column] += n

    def totals(self) -> dict[str, int]:
        """Non-zero counts summed over readers, keyed ``source/reason``."""
        summed = self.counts.sum(0).tolist()
        return {c: int(v) for c, v in zip(self.columns, summed) if v}

    def bad_fraction(self) -> tuple[float, int]:
        """Fraction of read samples that were skipped, and the number of samples read."""
        totals = self.totals()
        good = sum(v for k, v in totals.items() if k.endswith("/ok"))
        bad = sum(v for k, v in totals.items() if k.split("/", 1)[1] in REASONS)
        return (bad / (good + bad) if good + bad else 0.0), good + bad

    def proportions(self) -> dict[str, float]:
        """Realised share of each source among the used samples."""
        totals = self.totals()
        used = {s: totals.get(f"{s}/ok", 0) for s in self.sources}
        total = sum(used.values())
        return {s: (n / total if total else 0.0) for s, n in used.items()}

    def report(self) -> str:
        """A printable table: used samples, realised share and skipped samples by reason, per source."""
        totals = self.totals()
        shares = self.proportions()
        lines = [f"{'source':<24} {'used':>8} {'share':>7} {'dropped img':>11}  skipped (reason: count)"]
        for s in self.sources:
            bad = ", ".join(f"{r}: {totals[f'{s}/{r}']}" for r in REASONS if f"{s}/{r}" in totals) or "-"
            used, dropped = totals.get(f"{s}/ok", 0), totals.get(f"{s}/dropped_images", 0)
            lines.append(f"{s:<24} {used:>8} {shares[s]:>7.3f} {dropped:>11}  {bad}")
        return "\n".join(lines)


class SkipLog:
    """Warnings about skipped samples that cannot flood the log (every skip is counted anyway).

    Per ``(source, reason)`` the first ``first`` occurrences are logged, then only the 4th, 8th, 16th... with
    the count so far: about ``log2(n)`` lines for ``n`` skips instead of ``n``.

    Args:
        logger: Where to warn.
        first: Occurrences of each source and reason logged before thinning out.
    """

    def __init__(self, logger: logging.Logger, first: int = 3) -> None:
        self.logger = logger
        self.first = first
        self.counts: Counter[tuple[str, str]] = Counter()

    def __call__(self, source: str, bad: BadSample) -> bool:
        """Count ``bad`` and log it if it is due; returns whether it was logged."""
        key = (source, bad.reason)
        self.counts[key] += 1
        n = self.counts[key]
        if n > self.first and n & (n - 1):
            return False
        more = "" if n < self.first else f" ({n} {bad.reason} so far here; next message at {1 << n.bit_length()})"
        self.logger.warning("skipped a sample of %s: %s%s", source, bad, more)
        return True
