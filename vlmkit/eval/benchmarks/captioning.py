"""Reader for COCO captioning, from the official captions file or Karpathy's split file.

Official COCO captions (https://cocodataset.org, ``annotations_trainval2014.zip``), unchanged:
``captions_val2014.json`` with ``{"images": [{"id": 391895, "file_name": "COCO_val2014_000000391895.jpg", ...}],
"annotations": [{"image_id": 391895, "id": 770337, "caption": "A man with a red helmet ..."}, ...]}`` and the
images ``{file_name}`` in one directory (``val2014/``).

Karpathy split (``caption_datasets.zip`` from https://cs.stanford.edu/people/karpathy/deepimagesent/):
``dataset_coco.json`` with ``{"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
"split": "test", "sentences": [{"raw": "A man with a red helmet ...", "tokens": [...], ...}], "cocoid": 391895,
...}], "dataset": "coco"}``; ``image_dir`` is the COCO root holding ``train2014/`` and ``val2014/`` (a flat
directory of all the files also works). The 5,000-image ``"test"`` split is the usual evaluation set.
Karpathy's ``dataset_flickr30k.json`` reads the same way (its ids come from ``imgid``; it has no ``filepath``).

Design: one ``EvalSample`` per image, with all its reference captions as ``answers`` and an empty question.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmkit.eval.benchmarks._common import (
    Annotations,
    StrPath,
    check_limit,
    collect,
    open_annotations,
    records,
    require,
)
from vlmkit.eval.sample import EvalSample

logger = logging.getLogger(__name__)


def load_coco_captions(
    annotations_file: StrPath,
    image_dir: StrPath,
    split: str | None = "test",
    limit: int | None = None,
    skip_missing_images: bool = False,
) -> list[EvalSample]:
    """Read COCO images with their reference captions (task ``"coco"``).

    The layout is detected: a top-level ``"annotations"`` key means the official captions file, images
    carrying ``"sentences"`` mean a Karpathy split file.

    Args:
        annotations_file: ``captions_{split}2014.json`` or Karpathy's ``dataset_coco.json``.
        image_dir: Directory of the images (official layout) or the COCO root (Karpathy layout).
        split: Karpathy split to keep (``"train"``, ``"restval"``, ``"val"``, ``"test"``), or ``None`` for
            all; ignored for the official layout, whose file is already one split.
        limit: Read at most this many images, in file order.
        skip_missing_images: Skip images whose file is missing (logging how many) instead of raising.

    Returns:
        One sample per image: ``id`` is the COCO image id, ``answers`` its captions (stripped, in file order),
        ``question`` empty; ``extra["file_name"]`` is the image's file name.

    Raises:
        FileNotFoundError: If the file or directory is missing, or an image is (unless skipped).
        ValueError: If the layout is not recognised or a record lacks a key (the message names file, record
            and key).
    """
    check_limit(limit)
    files = open_annotations(annotations_file, "images", image_dir, skip_missing_images, logger)
    data, images = files.data, files.items
    if isinstance(data, dict) and "annotations" in data:
        sample = _official(files)
    elif data.get("dataset") or (images and isinstance(images[0], dict) and "sentences" in images[0]):
        sample = _karpathy(files, split)
    else:
        raise ValueError(
            f"{files.source}: neither a COCO captions file (no 'annotations' key) nor a Karpathy split file "
            "(no 'sentences' in its images)"
        )
    return collect(enumerate(images), limit, sample, files.missing)


def _official(files: Annotations) -> Callable[[tuple[int, Any]], EvalSample | None]:
    """The sample of each image record of an official captions file (its captions gathered first)."""
    source = files.source
    captions: dict[object, list[str]] = {}
    for j, annotation in enumerate(records(files.data, "annotations", source)):
        image_id = require(annotation, "image_id", source, f"annotation {j}")
        caption = require(annotation, "caption", source, f"annotation {j} (image_id {image_id})")
        captions.setdefault(image_id, []).append(str(caption).strip())

    def sample(numbered: tuple[int, Any]) -> EvalSample | None:
        i, image = numbered
        image_id = require(image, "id", source, f"image record {i}")
        where = f"image record {i} (id {image_id})"
        file_name = str(require(image, "file_name", source, where))
        path = files.image_dir / file_name
        return (
            _sample(image_id, path, captions.get(image_id, []), file_name) if files.missing.found(path, where) else None
        )

    return sample


def _karpathy(files: Annotations, split: str | None) -> Callable[[tuple[int, Any]], EvalSample | None]:
    """The sample of each image record of a Karpathy split file (``None`` for other splits)."""
    source, image_dir = files.source, files.image_dir

    def sample(numbered: tuple[int, Any]) -> EvalSample | None:
        i, image = numbered
        id_key = "cocoid" if isinstance(image, dict) and "cocoid" in image else "imgid"
        image_id = require(image, id_key, source, f"image record {i}")
        where = f"image record {i} ({id_key} {image_id})"
        if split is not None and require(image, "split", source, where) != split:
            return None
        file_name = str(require(image, "filename", source, where))
        path = image_dir / str(image.get("filepath", "")) / file_name
        if not path.is_file() and (image_dir / file_name).is_file():
            path = image_dir / file_name  # a flat directory of images
        sentences = require(image, "sentences", source, where)
        if not isinstance(sentences, list):
            raise ValueError(f"{source}: {where} has 'sentences' that is not a list")
        captions = [str(require(s, "raw", source, f"{where} sentence {k}")).strip() for k, s in enumerate(sentences)]
        return _sample(image_id, path, captions, file_name) if files.missing.found(path, where) else None

    return sample


def _sample(image_id: object, path: Path, captions: list[str], file_name: str) -> EvalSample:
    return EvalSample(
        id=str(image_id),
        images=(path,),
        question="",
        answers=tuple(captions),
        task="coco",
        extra={"file_name": file_name},
    )
