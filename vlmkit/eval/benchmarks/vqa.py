"""Readers for open-ended visual question answering: VQAv2, OK-VQA and TextVQA (the files as published).

VQAv2 (https://visualqa.org/download.html, "Balanced Real Images"), unchanged after unzipping:

- ``v2_OpenEnded_mscoco_val2014_questions.json``: ``{"data_subtype": "val2014", "questions": [{"image_id": 42,
  "question": "...", "question_id": 42000}, ...]}`` (``data_subtype`` is optional here).
- ``v2_mscoco_val2014_annotations.json``: ``{"annotations": [{"question_id": 42000, "image_id": 42,
  "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": 1}, ... 10 of them],
  "multiple_choice_answer": "yes", "answer_type": "yes/no", "question_type": "is the"}, ...]}``.
- COCO images (https://cocodataset.org, ``val2014.zip``) in one directory, named
  ``COCO_val2014_{image_id:012d}.jpg``; any ``COCO_{split}_{image_id:012d}.jpg`` (``train2014``,
  ``test2015``, ...) is found too.

OK-VQA (https://okvqa.allenai.org/download.html) has the same layout and COCO images:
``OpenEnded_mscoco_val2014_questions.json`` and ``mscoco_val2014_annotations.json``.

TextVQA (https://textvqa.org/dataset, v0.5.1): ``TextVQA_0.5.1_val.json`` with ``{"data": [{"question_id": 34602,
"question": "...", "image_id": "003a8ae2ef43b901", "answers": ["nous les gosses", ... 10 strings], ...}, ...]}``
and the images ``{image_id}.jpg`` in one directory (``train_val_images.zip`` unpacks to ``train_images/``).

Design: one ``EvalSample`` per question with the 10 human answers as references (VQA accuracy needs all of
them); images come back as paths, checked to exist but not opened.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from vlmkit.eval.benchmarks._common import (
    StrPath,
    check_limit,
    collect,
    open_annotations,
    read_json,
    read_questions,
    records,
    require,
)
from vlmkit.eval.sample import EvalSample

logger = logging.getLogger(__name__)

_COCO_NAME = re.compile(r"COCO_[A-Za-z0-9]+_(\d{12})\.jpg")


def load_vqav2(
    questions_file: StrPath,
    annotations_file: StrPath | None,
    image_dir: StrPath,
    limit: int | None = None,
    skip_missing_images: bool = False,
) -> list[EvalSample]:
    """Read VQAv2 questions with their 10 human answers (task ``"vqav2"``).

    Args:
        questions_file: ``v2_OpenEnded_mscoco_{split}_questions.json``.
        annotations_file: ``v2_mscoco_{split}_annotations.json``; ``None`` for test-dev/test, whose answers
            are not published (the samples then have no answers, for a submission to the evaluation server).
        image_dir: Directory holding ``COCO_{split}_{image_id:012d}.jpg``.
        limit: Read at most this many questions, in file order.
        skip_missing_images: Skip questions whose image file is missing (logging how many) instead of raising.

    Returns:
        One sample per question: ``id`` is the question id, ``answers`` the 10 human answers, ``images`` the
        image path; ``extra`` has ``image_id`` and, with annotations, ``multiple_choice_answer``,
        ``answer_type`` and ``question_type``.

    Raises:
        FileNotFoundError: If a file or directory is missing, or an image is (unless skipped).
        ValueError: If a record lacks a key (the message names file, record and key), or a question has no
            annotation.
    """
    return _load_coco_vqa(questions_file, annotations_file, image_dir, "vqav2", limit, skip_missing_images)


def load_okvqa(
    questions_file: StrPath, annotations_file: StrPath | None, image_dir: StrPath, **options: Any
) -> list[EvalSample]:
    """Read OK-VQA (``OpenEnded_mscoco_val2014_questions.json``, ``mscoco_val2014_annotations.json``).

    Same layout, arguments (``limit``, ``skip_missing_images``), results and errors as ``load_vqav2``; the task is
    ``"okvqa"``.
    """
    return _load_coco_vqa(questions_file, annotations_file, image_dir, "okvqa", **options)


def load_textvqa(
    annotations_file: StrPath,
    image_dir: StrPath,
    limit: int | None = None,
    skip_missing_images: bool = False,
) -> list[EvalSample]:
    """Read TextVQA questions with their 10 human answers (task ``"textvqa"``).

    Args:
        annotations_file: ``TextVQA_0.5.1_{split}.json`` (train or val; the test file has no answers).
        image_dir: Directory holding ``{image_id}.jpg``.
        limit: Read at most this many questions, in file order.
        skip_missing_images: Skip questions whose image file is missing (logging how many) instead of raising.

    Returns:
        One sample per question: ``id`` is the question id, ``answers`` the 10 answers; ``extra["image_id"]``.

    Raises:
        FileNotFoundError: If the file or directory is missing, or an image is (unless skipped).
        ValueError: If a record lacks a key (the message names file, record and key).
    """
    return read_questions(
        annotations_file,
        image_dir,
        limit,
        skip_missing_images,
        logger,
        task="textvqa",
        id_key="question_id",
        image=_image,
    )


def _image(record: Mapping, get: Callable[[str], Any]) -> tuple[PurePosixPath, dict]:
    """``{image_id}.jpg`` and the extra keys of a TextVQA record."""
    image_id = str(get("image_id"))
    return PurePosixPath(f"{image_id}.jpg"), {"image_id": image_id}


def _load_coco_vqa(
    questions_file: StrPath,
    annotations_file: StrPath | None,
    image_dir: StrPath,
    task: str,
    limit: int | None = None,
    skip_missing_images: bool = False,
) -> list[EvalSample]:
    check_limit(limit)
    source, data, questions, image_dir, missing = open_annotations(
        questions_file, "questions", image_dir, skip_missing_images, logger, "questions file"
    )
    annotations = None if annotations_file is None else _Annotations(Path(annotations_file))
    images = _CocoImages(image_dir, data.get("data_subtype"))

    def sample(numbered: tuple[int, Any]) -> EvalSample | None:
        i, question = numbered
        question_id = require(question, "question_id", source, f"record {i}")
        where = f"record {i} (question_id {question_id})"
        image_id = require(question, "image_id", source, where)
        if not isinstance(image_id, int):
            raise ValueError(f"{source}: {where} has a non-integer 'image_id' {image_id!r}")
        path = images.find(image_id)
        if not missing.found(path, where):
            return None
        answers, extra = annotations.lookup(question_id, where, source) if annotations else ((), {})
        text = str(require(question, "question", source, where))
        return EvalSample(str(question_id), (path,), text, answers, task=task, extra={"image_id": image_id, **extra})

    return collect(enumerate(questions), limit, sample, missing)


class _Annotations:
    """The annotations of a VQA-style file, indexed by question id and checked when looked up."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.by_question: dict = {}
        for j, annotation in enumerate(records(read_json(source), "annotations", source)):
            self.by_question[require(annotation, "question_id", source, f"record {j}")] = (j, annotation)

    def lookup(self, question_id: object, where: str, questions: Path) -> tuple[tuple[str, ...], dict]:
        if question_id not in self.by_question:
            raise ValueError(f"{self.source}: no annotation for question_id {question_id} ({where} of {questions})")
        j, annotation = self.by_question[question_id]
        at = f"record {j} (question_id {question_id})"
        answers = require(annotation, "answers", self.source, at)
        if not isinstance(answers, list):
            raise ValueError(f"{self.source}: {at} has 'answers' that is not a list")
        texts = tuple(str(require(a, "answer", self.source, f"{at} answer {k}")) for k, a in enumerate(answers))
        keys = ("multiple_choice_answer", "answer_type", "question_type")
        return texts, {key: annotation[key] for key in keys if key in annotation}


class _CocoImages:
    """Finds ``COCO_{split}_{image_id:012d}.jpg``: the named split first, else any split (one listing)."""

    def __init__(self, image_dir: Path, split: object = None) -> None:
        self.image_dir = image_dir
        self.split = split if isinstance(split, str) and split else None
        self._index: dict[int, Path] | None = None

    def find(self, image_id: int) -> Path:
        """The image's path; a non-existent ``COCO_{split or val2014}_...`` path if there is none."""
        expected = self.image_dir / f"COCO_{self.split or 'val2014'}_{image_id:012d}.jpg"
        if expected.is_file():
            return expected
        if self._index is None:
            self._index = {}
            for name in sorted(os.listdir(self.image_dir)):
                match = _COCO_NAME.fullmatch(name)
                if match:
                    self._index.setdefault(int(match.group(1)), self.image_dir / name)
        return self._index.get(image_id, expected)
