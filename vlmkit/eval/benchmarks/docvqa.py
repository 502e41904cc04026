"""Reader for DocVQA (single-page document VQA), from the files as published.

DocVQA task 1 (https://rrc.cvc.uab.es/?ch=17, "Single Document VQA"; ``val.tar.gz`` unpacks to ``val/``):
``val_v1.0.json`` (``train_v1.0.json``, ...) with ``{"dataset_name": "docvqa", "dataset_split": "val",
"data": [{"questionId": 49153, "question": "What is the ...?", "image": "documents/pybv0228_81.png",
"docId": 14465, "answers": ["0.28"], ...}, ...]}``; ``image`` is relative to the directory holding the JSON,
so ``image_dir`` is that directory (``val/``). A flat directory of the page images also works.

Design: one ``EvalSample`` per question with all accepted answers (ANLS takes the best match).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

from vlmkit.eval.benchmarks._common import StrPath, read_questions
from vlmkit.eval.sample import EvalSample

logger = logging.getLogger(__name__)


def load_docvqa(
    annotations_file: StrPath,
    image_dir: StrPath,
    limit: int | None = None,
    skip_missing_images: bool = False,
) -> list[EvalSample]:
    """Read DocVQA questions with their answers (task ``"docvqa"``).

    Args:
        annotations_file: ``{split}_v1.0.json`` (train or val; the test file has no answers).
        image_dir: The directory that ``image`` paths (``documents/xyz.png``) are relative to.
        limit: Read at most this many questions, in file order.
        skip_missing_images: Skip questions whose page image is missing (logging how many) instead of raising.

    Returns:
        One sample per question: ``id`` is ``questionId``, ``answers`` the accepted answers, ``images`` the
        page image path; ``extra`` has ``doc_id`` and ``question_types`` where the file gives them.

    Raises:
        FileNotFoundError: If the file or directory is missing, or an image is (unless skipped).
        ValueError: If a record lacks a key (the message names file, record and key).
    """
    return read_questions(
        annotations_file, image_dir, limit, skip_missing_images, logger, task="docvqa", id_key="questionId", image=_page
    )


def _page(record: Mapping, get: Callable[[str], Any]) -> tuple[PurePosixPath, dict]:
    """The page image (relative to the directory of the JSON file) and the extra keys of a DocVQA record."""
    extra = {"doc_id": record["docId"]} if "docId" in record else {}
    if "question_types" in record:
        extra["question_types"] = record["question_types"]
    return PurePosixPath(str(get("image"))), extra
