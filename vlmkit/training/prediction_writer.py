"""Callbacks: writing ``vlmkit predict`` answers where a person can read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Write every prediction record of every rank as one JSON line, in dataset order, and print the first few.

    Under DDP/FSDP each rank predicts its share of the samples; the records are gathered on rank 0, put in
    dataset order by their ``sample_index`` (set by vlmkit's data modules; otherwise Lightning's batch
    indices), and a sample met twice (a sampler that repeats samples to even out the ranks) is written once.

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
        """Gather the records of all ranks on rank 0, order them, drop repeated samples and write them."""
        records = _indexed_records(predictions, batch_indices)
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, records)
            records = [record for part in parts for record in part]
        records = _in_dataset_order(records)
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


def _indexed_records(predictions: list[Any], batch_indices: Any) -> list[dict[str, Any]]:
    """The records of this rank, each with a ``sample_index`` when known (from the data or the batch indices)."""
    if predictions and predictions[0] and not isinstance(predictions[0][0], dict):  # several dataloaders
        return [record for loader in predictions for batch in loader for record in batch]
    records = []
    for i, batch in enumerate(predictions):
        indices = batch_indices[i] if batch_indices is not None and i < len(batch_indices) else None
        for j, record in enumerate(batch):
            if "sample_index" not in record and indices is not None and len(indices) == len(batch):
                record = {**record, "sample_index": int(indices[j])}
            records.append(record)
    return records


def _in_dataset_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records sorted by ``sample_index`` with each index kept once; unchanged when an index is missing."""
    if not records or any("sample_index" not in record for record in records):
        return records
    unique = {}
    for record in records:
        unique.setdefault(record["sample_index"], record)
    return [unique[index] for index in sorted(unique)]
