"""Readers for multiple-choice benchmarks: MMBench, MMMU and MathVista (the files as published).

MMBench (https://github.com/open-compass/MMBench; the TSVs VLMEvalKit downloads, e.g. ``MMBench_DEV_EN.tsv``):
tab-separated, a header row, columns ``index, question, hint, A, B, C, D[, E, F], answer, category, image[,
l2-category, split, source]``; ``image`` is a base64 JPEG/PNG, or (to save space) the ``index`` of another row
whose image it shares. Empty cells (pandas' NaN) mark absent options and hints; test files have no ``answer``.

MMMU (https://huggingface.co/datasets/MMMU/MMMU): one directory per subject holding
``{dev,validation,test}-00000-of-00001.parquet`` with columns ``id, question, options`` (a Python-literal list
as a string, ``"['$6', '$7']"``), ``answer`` (a letter; free text for open questions), ``question_type``
(``"multiple-choice"`` / ``"open"``), ``image_1`` .. ``image_7`` (``{"bytes", "path"}`` or null) and
``subfield, topic_difficulty, img_type, explanation``. A ``save_to_disk`` directory of the same columns works too.

MathVista (https://huggingface.co/datasets/AI4Math/MathVista): ``data/testmini-*.parquet`` / ``data/test-*.parquet``
with columns ``pid, question, image`` (``"images/1.jpg"``), ``decoded_image`` (``{"bytes", "path"}``),
``choices`` (list or null), ``answer, question_type`` (``"multi_choice"`` / ``"free_form"``), ``answer_type,
precision, unit, query, metadata``; or the JSON annotations (``annot_testmini.json``, or ``data/testmini.json`` of
the GitHub repository) ``{pid: {the same keys without decoded_image}}`` with ``images/{pid}.jpg`` from
``images.zip`` beside it.

Design: choices are the option texts in order (A, B, C, ...) and the answer is the correct letter; embedded
images come back as lazily decoded PIL images, image files as paths.
"""

from __future__ import annotations

import ast
import csv
import logging
import re
import string
import sys
from pathlib import Path
from typing import Any

from vlmkit.data.image_processing import ImageInput
from vlmkit.eval.benchmarks._common import (
    MissingImages,
    StrPath,
    check_limit,
    collect,
    existing_file,
    open_image_base64,
    require,
)
from vlmkit.eval.benchmarks._tables import image_from_cell, json_rows, table_rows
from vlmkit.eval.sample import EvalSample

logger = logging.getLogger(__name__)

_IMAGE_REF = re.compile(r"<image (\d+)>")
_MMMU_MAX_IMAGES = 7
_LETTERS = string.ascii_uppercase


def load_mmbench(tsv_file: StrPath, limit: int | None = None) -> list[EvalSample]:
    """Read an MMBench TSV (task ``"mmbench"``); CCBench and SEEDBench TSVs share the layout.

    Args:
        tsv_file: The TSV file (``MMBench_DEV_EN.tsv``, ``MMBench_TEST_EN.tsv``, ...).
        limit: Read at most this many rows, in file order.

    Returns:
        One sample per row: ``id`` is ``index``, ``images`` one lazily decoded PIL image, ``choices`` the
        non-empty options, ``answers`` the correct letter (empty without an ``answer`` column), ``context`` the
        hint; ``extra`` has ``category``, ``l2-category``, ``split`` and ``source`` where present.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If a row lacks a column, has an undecodable image, a gap in its options, or an answer
            that names no option (the message names file, row and column).
    """
    check_limit(limit)
    source = existing_file(tsv_file, "MMBench TSV file")
    rows = _read_tsv(source)  # all of it, even with a limit: a row may borrow a later row's image
    image_of = {(row.get("index") or "").strip(): row.get("image") or "" for row in rows}

    def sample(numbered: tuple[int, dict[str, str]]) -> EvalSample:
        i, row = numbered
        index = _cell(row, "index", source, f"row {i}")
        where = f"row {i} (index {index})"
        encoded = _cell(row, "image", source, where)
        if len(encoded) <= 64 and len(image_of.get(encoded, "")) > 64:
            encoded = image_of[encoded]  # a reference to the row that carries the image
        image = open_image_base64(encoded, source, f"{where} column 'image'")
        choices = _options(row, source, where)
        answer = _cell(row, "answer", source, where) if "answer" in row else ""
        if answer and answer not in _LETTERS[: len(choices)]:
            raise ValueError(f"{source}: {where} has answer {answer!r}, not one of its {len(choices)} options")
        keys = ("category", "l2-category", "split", "source")
        return EvalSample(
            id=index,
            images=(image,),
            question=_cell(row, "question", source, where),
            answers=(answer,) if answer else (),
            choices=choices,
            task="mmbench",
            context=_cell(row, "hint", source, where) if "hint" in row else "",
            extra={key: row[key] for key in keys if _present(row.get(key))},
        )

    return collect(enumerate(rows), limit, sample)


def load_mmmu(
    source: StrPath, split: str = "validation", limit: int | None = None, skip_missing_images: bool = False
) -> list[EvalSample]:
    """Read MMMU from its Hub parquet files or a ``save_to_disk`` directory (task ``"mmmu"``).

    Args:
        source: The dataset root (subject directories of parquet files), one parquet file, or a
            ``save_to_disk`` directory.
        split: ``"dev"``, ``"validation"`` or ``"test"``.
        limit: Read at most this many questions, in path then row order.
        skip_missing_images: Skip questions whose image is a missing file (only for path-only image cells).

    Returns:
        One sample per question: ``id`` is MMMU's id, ``images`` the images referenced as ``<image k>`` in the
        question and options in order of first reference (all non-empty ``image_k`` if none is referenced;
        the ``<image k>`` text stays), ``choices`` the options of multiple-choice questions (empty for open
        ones), ``answers`` the letter or open answer (empty where withheld: ``""`` or ``"?"``); ``extra`` has
        ``question_type``, ``subfield``, ``topic_difficulty`` and ``img_type`` where present.

    Raises:
        FileNotFoundError: If ``source`` is missing or holds no file of ``split``.
        ImportError: If ``pyarrow`` (parquet) or ``datasets`` (``save_to_disk``) is not installed.
        ValueError: If a row lacks a column, has unparsable options, or refers to an empty ``image_k``.
    """
    check_limit(limit)
    missing = MissingImages(Path(source), skip_missing_images, logger)

    def sample(located: tuple[Path, int, dict]) -> EvalSample | None:
        file, i, row = located
        mmmu_id = str(require(row, "id", file, f"row {i}"))
        where = f"row {i} (id {mmmu_id})"
        question = str(require(row, "question", file, where))
        options = _literal_list(require(row, "options", file, where), file, where)
        multiple_choice = require(row, "question_type", file, where) == "multiple-choice"
        answer = str(require(row, "answer", file, where))
        images = _mmmu_images(row, question, options, file, where)
        if not all(missing.found(image, where) for image in images if isinstance(image, Path)):
            return None
        return EvalSample(
            id=mmmu_id,
            images=tuple(images),
            question=question,
            answers=() if answer in ("", "?") else (answer,),
            choices=tuple(options) if multiple_choice else (),
            task="mmmu",
            extra={k: row[k] for k in ("question_type", "subfield", "topic_difficulty", "img_type") if k in row},
        )

    return collect(table_rows(Path(source), split, "MMMU"), limit, sample, missing)


def load_mathvista(
    source: StrPath,
    split: str = "testmini",
    image_dir: StrPath | None = None,
    limit: int | None = None,
    skip_missing_images: bool = False,
) -> list[EvalSample]:
    """Read MathVista from its JSON annotations, its Hub parquet files or a ``save_to_disk`` directory.

    Args:
        source: ``annot_testmini.json`` / ``testmini.json``; a directory holding ``{split}.json`` or
            ``annot_{split}.json``; the Hub repository (``data/{split}-*.parquet``); one parquet file; or a
            ``save_to_disk`` directory.
        split: ``"testmini"`` or ``"test"``.
        image_dir: What ``image`` paths (``images/1.jpg``) are relative to, used when ``decoded_image`` is
            absent; defaults to the JSON file's directory (or ``source`` for a directory).
        limit: Read at most this many problems, in file order.
        skip_missing_images: Skip problems whose image file is missing (logging how many) instead of raising.

    Returns:
        One sample per problem (task ``"mathvista"``): ``id`` is the pid; for ``multi_choice`` problems
        ``choices`` are the option texts and ``answers`` the correct letter, for ``free_form`` ones ``answers``
        is the answer string (empty where withheld, as in ``test``); ``extra`` has ``question_type``,
        ``answer_type``, ``precision``, ``unit``, ``query`` and ``metadata`` where present.

    Raises:
        FileNotFoundError: If ``source`` is missing, or an image file is (unless skipped).
        ImportError: If ``pyarrow`` (parquet) or ``datasets`` (``save_to_disk``) is not installed.
        ValueError: If a record lacks a key, or a multiple-choice answer is none of its choices.
    """
    check_limit(limit)
    source = Path(source)
    json_file = _mathvista_json(source, split)
    if image_dir is not None:
        base = Path(image_dir)
    else:
        base = json_file.parent if json_file else source if source.is_dir() else source.parent
    rows = json_rows(json_file, "pid") if json_file else table_rows(source, split, "MathVista")
    missing = MissingImages(json_file or source, skip_missing_images, logger)

    def sample(located: tuple[Path, int, dict]) -> EvalSample | None:
        file, i, row = located
        pid = str(require(row, "pid", file, f"record {i}"))
        where = f"record {i} (pid {pid})"
        image = image_from_cell(row.get("decoded_image"), file, f"{where} decoded_image")
        if image is None:
            image = base / str(require(row, "image", file, where))
        if isinstance(image, Path) and not missing.found(image, where):
            return None
        answer = require(row, "answer", file, where)
        answer = "" if answer is None else str(answer)
        choices: tuple[str, ...] = ()
        if require(row, "question_type", file, where) == "multi_choice":
            options = require(row, "choices", file, where)
            if not isinstance(options, (list, tuple)):
                raise ValueError(f"{file}: {where} is multi_choice but 'choices' is {options!r}, not a list")
            choices = tuple(str(c) for c in options)
            answer = _letter(answer, choices, file, where) if answer else ""
        keys = ("question_type", "answer_type", "precision", "unit", "query", "metadata")
        return EvalSample(
            id=pid,
            images=(image,),
            question=str(require(row, "question", file, where)),
            answers=(answer,) if answer else (),
            choices=choices,
            task="mathvista",
            extra={k: row[k] for k in keys if k in row},
        )

    return collect(rows, limit, sample, missing)


def _read_tsv(source: Path) -> list[dict[str, str]]:
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)  # base64 images exceed the default 128 KiB field limit
    try:
        with source.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t"))
    finally:
        csv.field_size_limit(previous)


def _present(value: str | None) -> bool:
    return value is not None and value.strip() != "" and value.strip().lower() != "nan"


def _cell(row: dict[str, str], column: str, source: Path, where: str) -> str:
    value = require(row, column, source, where)
    return value.strip() if _present(value) else ""


def _options(row: dict[str, str], source: Path, where: str) -> tuple[str, ...]:
    require(row, "A", source, where)
    options: list[str] = []
    for letter in _LETTERS:
        if letter not in row:
            break
        if _present(row[letter]):
            if len(options) < _LETTERS.index(letter):
                raise ValueError(f"{source}: {where} has option {letter} after an empty option")
            options.append(row[letter].strip())
    return tuple(options)


def _literal_list(value: Any, source: Path, where: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{source}: {where} has unparsable 'options' {value!r}") from err
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{source}: {where} has 'options' of type {type(value).__name__}, expected a list")
    return [str(v) for v in value]


def _mmmu_images(row: dict, question: str, options: list[str], file: Path, where: str) -> list[ImageInput]:
    numbers = list(dict.fromkeys(int(k) for k in _IMAGE_REF.findall(" ".join([question, *options]))))
    if not numbers:
        numbers = [k for k in range(1, _MMMU_MAX_IMAGES + 1) if row.get(f"image_{k}") is not None]
    images = []
    for k in numbers:
        image = image_from_cell(require(row, f"image_{k}", file, where), file, f"{where} image_{k}")
        if image is None:
            raise ValueError(f"{file}: {where} refers to <image {k}> but 'image_{k}' is empty")
        images.append(image)
    return images


def _mathvista_json(source: Path, split: str) -> Path | None:
    if source.suffix == ".json":
        return existing_file(source, "MathVista annotation file")
    candidates = (source / f"{split}.json", source / f"annot_{split}.json")
    return next((path for path in candidates if path.is_file()), None)


def _letter(answer: str, choices: tuple[str, ...], source: Path, where: str) -> str:
    exact = [k for k, choice in enumerate(choices) if choice == answer]
    loose = [k for k, choice in enumerate(choices) if choice.strip() == answer.strip()]
    if exact or loose:
        return _LETTERS[(exact or loose)[0]]
    raise ValueError(f"{source}: {where} has answer {answer!r}, which is none of its choices {list(choices)}")
