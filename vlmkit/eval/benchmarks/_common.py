"""Helpers shared by the benchmark readers: file checks, key look-ups, missing-image policy.

Every error names the file it comes from; key errors also name the record (index and id) and the key,
so a broken download is found without a debugger. Images are returned as paths and never opened here.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from PIL import Image, UnidentifiedImageError

from vlmkit.eval.sample import EvalSample

StrPath = str | os.PathLike
"""A file or directory path."""


def existing_file(path: StrPath, what: str = "file") -> Path:
    """``path`` as a ``Path``; raises ``FileNotFoundError`` naming it if it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def existing_dir(path: StrPath, what: str = "directory") -> Path:
    """``path`` as a ``Path``; raises ``FileNotFoundError`` naming it if it is not a directory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_json(path: StrPath, what: str = "annotation file") -> Any:
    """Parse a JSON file; a missing file raises ``FileNotFoundError``, bad JSON ``ValueError``, both naming it."""
    path = existing_file(path, what)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err


def require(record: Any, key: str, source: Path, where: str) -> Any:
    """``record[key]``, or a ``ValueError`` naming ``source``, the record (``where``) and the key."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{source}: {where} is a {type(record).__name__}, expected a JSON object")
    if key not in record:
        raise ValueError(f"{source}: {where} has no key {key!r}")
    return record[key]


def strings(record: Any, key: str, source: Path, where: str) -> tuple[str, ...]:
    """``record[key]`` as a tuple of strings; ``ValueError`` if the key is missing or not a list."""
    value = require(record, key, source, where)
    if not isinstance(value, list):
        raise ValueError(f"{source}: {where} has {key!r} of type {type(value).__name__}, expected a list")
    return tuple(str(v) for v in value)


def records(data: Any, key: str, source: Path) -> list:
    """The list under ``data[key]`` (e.g. ``"questions"``), or a ``ValueError`` naming the file and key."""
    value = require(data, key, source, "the top-level object")
    if not isinstance(value, list):
        raise ValueError(f"{source}: {key!r} is a {type(value).__name__}, expected a list")
    return value


def check_limit(limit: int | None) -> None:
    """Raise ``ValueError`` unless ``limit`` is ``None`` or a non-negative integer."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")


def full(samples: list, limit: int | None) -> bool:
    """Whether ``samples`` already holds ``limit`` items."""
    return limit is not None and len(samples) >= limit


Item = TypeVar("Item")
Sample = TypeVar("Sample")


def collect(
    items: Iterable[Item],
    limit: int | None,
    sample: Callable[[Item], Sample | None],
    missing: MissingImages | None = None,
) -> list[Sample]:
    """The reader loop: ``sample(item)`` of each item in order (``None``: skipped), at most ``limit`` of them.

    Args:
        items: The records of a benchmark file, in file order (often ``enumerate(...)`` of them).
        limit: Most samples to return; ``None``: all.
        sample: Builds one sample from one item (raising, naming the file and record, on a bad one), or returns
            ``None`` to skip it (a missing image under ``skip_missing_images``).
        missing: The reader's missing-image policy; its count is logged once the loop ends.
    """
    samples: list[Sample] = []
    for item in items:
        if full(samples, limit):
            break
        made = sample(item)
        if made is not None:
            samples.append(made)
    if missing is not None:
        missing.report()
    return samples


def open_image_bytes(data: bytes, source: Path, where: str) -> Image.Image:
    """A lazily decoded PIL image from encoded bytes (JPEG, PNG, ...); ``ValueError`` if unreadable."""
    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{source}: {where} holds image bytes that cannot be decoded: {err}") from err


def open_image_base64(encoded: str, source: Path, where: str) -> Image.Image:
    """A lazily decoded PIL image from base64 text; ``ValueError`` if it is not base64 or not an image."""
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error as err:
        raise ValueError(f"{source}: {where} is not base64: {err}") from err
    return open_image_bytes(data, source, where)


class MissingImages:
    """What to do with a question whose image file is missing: raise, or skip it and count it.

    Args:
        source: The annotation file the questions come from (named in messages).
        skip: Skip such questions (and log how many at the end) instead of raising.
        logger: The reader module's logger.
    """

    def __init__(self, source: Path, skip: bool, logger: logging.Logger) -> None:
        self.source, self.skip, self.logger = source, skip, logger
        self.count = 0
        self.first: Path | None = None

    def found(self, path: Path, where: str) -> bool:
        """True if ``path`` is a file; otherwise count it (``skip``) or raise ``FileNotFoundError``."""
        if path.is_file():
            return True
        if not self.skip:
            raise FileNotFoundError(
                f"image file not found: {path} (for {where} of {self.source}); "
                "pass skip_missing_images=True to skip such questions"
            )
        self.count += 1
        self.first = self.first or path
        return False

    def report(self) -> None:
        """Log a warning with the number of skipped questions, if any."""
        if self.count:
            self.logger.warning(
                "%s: skipped %d question(s) whose image file is missing (first: %s)",
                self.source,
                self.count,
                self.first,
            )


class Annotations(NamedTuple):
    """A benchmark's JSON annotation file, opened: what every JSON reader starts from."""

    source: Path
    """The file (named in every error)."""
    data: Any
    """Its parsed JSON."""
    items: list
    """The list of records under the reader's key."""
    image_dir: Path
    """The checked image directory."""
    missing: MissingImages
    """The missing-image policy of the reader."""


def open_annotations(
    path: StrPath,
    key: str,
    image_dir: StrPath,
    skip_missing_images: bool,
    logger: logging.Logger,
    what: str = "annotation file",
) -> Annotations:
    """Read ``path`` (a JSON file with a list under ``key``) and check ``image_dir``, naming the files at fault."""
    source = Path(path)
    data = read_json(source, what)
    items = records(data, key, source)
    return Annotations(
        source,
        data,
        items,
        existing_dir(image_dir, "image directory"),
        MissingImages(source, skip_missing_images, logger),
    )


def read_questions(
    annotations_file: StrPath,
    image_dir: StrPath,
    limit: int | None,
    skip_missing_images: bool,
    logger: logging.Logger,
    *,
    task: str,
    id_key: str,
    image: Callable[[Mapping, Callable[[str], Any]], tuple[Path, dict]],
) -> list[EvalSample]:
    """Read a JSON list of questions under ``"data"``, each with one image and answers (TextVQA, DocVQA).

    Args:
        annotations_file: The JSON file.
        image_dir: What image paths are relative to.
        limit: Most questions to read; ``None``: all.
        skip_missing_images: Skip a question whose image file is missing instead of raising.
        logger: The reader module's logger (for the count of skipped questions).
        task: The samples' task name.
        id_key: The key of the question id.
        image: ``(record, get) -> (image path relative to image_dir, extra)``, where ``get(key)`` is the record's
            value, or an error naming the file, record and key.
    """
    check_limit(limit)
    source, _, items, image_root, missing = open_annotations(
        annotations_file, "data", image_dir, skip_missing_images, logger
    )

    def sample(numbered: tuple[int, Any]) -> EvalSample | None:
        i, item = numbered
        question_id = require(item, id_key, source, f"record {i}")
        where = f"record {i} ({id_key} {question_id})"
        relative, extra = image(item, lambda key: require(item, key, source, where))
        path = image_root / relative
        if not path.is_file() and (image_root / relative.name).is_file():
            path = image_root / relative.name  # a flat directory of the images
        if not missing.found(path, where):
            return None
        question = str(require(item, "question", source, where))
        answers = strings(item, "answers", source, where)
        return EvalSample(str(question_id), (path,), question, answers, task=task, extra=extra)

    return collect(enumerate(items), limit, sample, missing)
