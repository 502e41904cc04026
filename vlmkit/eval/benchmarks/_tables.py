"""Rows of a Hugging Face dataset kept on disk (parquet files or ``save_to_disk``), or of a JSON record file.

Both optional dependencies are imported only when such a source is read: ``pyarrow`` for parquet files
(streamed in batches, so ``limit`` stops early) and ``datasets`` for ``load_from_disk`` directories.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from vlmkit.data.image_processing import ImageInput
from vlmkit.eval.benchmarks._common import open_image_bytes, read_json


def table_rows(source: Path, split: str, what: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Yield ``(file, row index in that file, row)`` for every row of ``split``.

    Args:
        source: A ``.parquet`` file (read whole, ``split`` ignored); a directory searched recursively for the
            split's parquet files (``{split}-*.parquet`` or ``{split}.parquet`` as on the Hub, or any
            ``*.parquet`` inside a ``{split}/`` directory), read in path order; or a directory written by
            ``save_to_disk`` (holding ``dataset_dict.json`` or ``state.json``).
        split: The split to read.
        what: The benchmark's name, for messages.

    Raises:
        FileNotFoundError: If ``source`` does not exist or holds no file of ``split``.
        ImportError: If the needed optional package (``pyarrow`` or ``datasets``) is not installed.
        ValueError: If a ``save_to_disk`` dataset dictionary has no ``split``.
    """
    if source.is_file() and source.suffix == ".parquet":
        yield from _parquet_rows([source], what)
    elif (source / "dataset_dict.json").is_file() or (source / "state.json").is_file():
        yield from _saved_rows(source, split, what)
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*.parquet") if _in_split(p, split))
        if not files:
            raise FileNotFoundError(
                f"no {what} parquet file of split {split!r} ({split}-*.parquet) under {source}, "
                "and it is not a save_to_disk directory"
            )
        yield from _parquet_rows(files, what)
    else:
        raise FileNotFoundError(f"{what} data not found: {source}")


def json_rows(source: Path, id_key: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Yield ``(source, index, record)`` from a JSON list of records or an ``{id: record}`` object.

    In the object form each record gets its key as ``record[id_key]`` unless it already has one.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not valid JSON, or neither a list nor an object.
    """
    data = read_json(source)
    if isinstance(data, dict):
        data = [{id_key: key, **record} if isinstance(record, dict) else record for key, record in data.items()]
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a list of records or an {{{id_key}: record}} object")
    for index, record in enumerate(data):
        yield source, index, record


def image_from_cell(value: Any, source: Path, where: str) -> ImageInput | None:
    """An image from a table cell: a PIL image, ``{"bytes", "path"}`` (the Hub's image struct) or raw bytes.

    Embedded bytes become a lazily decoded PIL image; a cell with only a path gives that ``Path``.
    ``None`` (or a struct with neither) gives ``None``.

    Raises:
        ValueError: If the cell holds something else, or bytes that are not an image.
    """
    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, (bytes, bytearray)):
        return open_image_bytes(bytes(value), source, where)
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return open_image_bytes(value["bytes"], source, where)
        return Path(value["path"]) if value.get("path") else None
    raise ValueError(f"{source}: {where} holds an image of unsupported type {type(value).__name__}")


def _in_split(path: Path, split: str) -> bool:
    return path.name.startswith(f"{split}-") or path.name == f"{split}.parquet" or path.parent.name == split


def _parquet_rows(files: list[Path], what: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            f"reading {what} parquet files needs pyarrow: `pip install pyarrow` (or `datasets`, which brings it)"
        ) from err
    for file in files:
        index = 0
        for batch in pq.ParquetFile(file).iter_batches(batch_size=64):
            for row in batch.to_pylist():
                yield file, index, row
                index += 1


def _saved_rows(source: Path, split: str, what: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"reading {what} from a save_to_disk directory ({source}) needs the datasets package: "
            "`pip install datasets`"
        ) from err
    dataset = datasets.load_from_disk(str(source))
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"{source}: no split {split!r}; it has {sorted(dataset)}")
        dataset = dataset[split]
    for index, row in enumerate(dataset):
        yield source, index, row
