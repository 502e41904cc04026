"""Callbacks: writing ``vlmkit predict`` answers where a person can read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Write every prediction record as one JSON line and print the first few.

    Args:
        output_file: JSONL path; relative paths are under the trainer's ``log_dir``
            (or ``default_root_dir``).
        num_printed: How many records to print at the end of ``predict``.
    """

    def __init__(self, output_file: str = "predictions.jsonl", num_printed: int = 8) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file
        self.num_printed = num_printed
        self.path: Path | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions: list[Any], batch_indices: Any) -> None:
        """Flatten the per-batch lists of records and write them (rank 0 writes the file)."""
        records = [record for batch in predictions for record in batch]
        root = Path(trainer.log_dir or trainer.default_root_dir)
        self.path = Path(self.output_file) if Path(self.output_file).is_absolute() else root / self.output_file
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            for record in records[: self.num_printed]:
                print(json.dumps(record, ensure_ascii=False))
            print(f"wrote {len(records)} predictions to {self.path}")
