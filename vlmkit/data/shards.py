"""Write webdataset tar shards, deterministically, from a folder of images + JSONL or a saved HF dataset.

A sample is stored as ``<key>.json`` (its structure, see :func:`vlmkit.data.formats.validate`) and
``<key>.<i>.<ext>`` per image, where the JSON's ``images`` entries are the member suffixes ``"<i>.<ext>"``.
Image bytes are copied as given (never re-encoded); tar headers carry no time, user or permissions
that vary, so the same input gives byte-identical shards. ``manifest.json`` lists every shard with
its sample count and size, and the inputs skipped by reason. Every image is decoded once, with the
same checks as training (EXIF orientation, pixel limit), so what training would skip is skipped here.
The build is written to a hidden folder next to the output and moved into place at the end: a failed
or ``strict`` build leaves nothing behind.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlmkit.data.formats import BadSample, validate
from vlmkit.data.image_decode import DEFAULT_MAX_IMAGE_PIXELS, EncodedImage
from vlmkit.data.stats import SkipLog
from vlmkit.errors import UserInputError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class StrictBuildError(UserInputError, ValueError):
    """``strict`` build with skipped inputs: nothing was written."""


def short_path(path: Any, limit: int = 120) -> str:
    """``path`` as text, shortened in the middle when longer than ``limit`` characters (with its length)."""
    text = str(path)
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]}...{text[-limit // 2 :]} ({len(text):,} characters)"


@dataclass
class ShardItem:
    """One sample ready to be written: its key, JSON structure and image files ``[(suffix, bytes)]``."""

    key: str
    data: dict[str, Any]
    images: list[tuple[str, bytes]]


def _member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(payload), 0, 0o444, 0, 0
    tar.addfile(info, io.BytesIO(payload))


def _tar_size(sizes: Iterable[int]) -> int:
    """Bytes the members take in a tar: a 512-byte header each, contents padded to 512."""
    return sum(512 + -(-n // 512) * 512 for n in sizes)


def _file_size(members: int) -> int:
    """The tar file's size: members, two 512-byte end blocks, padded to tar's 10 KiB records."""
    return -(-(members + 1024) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def write_shards(
    items: Iterable[ShardItem | BadSample],
    output: str | Path,
    format: str,
    max_samples_per_shard: int = 10_000,
    max_shard_bytes: int = 1 << 30,
    strict: bool = False,
) -> dict[str, Any]:
    """Write ``items`` to ``output/shard-000000.tar``, ... and ``output/manifest.json``.

    A shard is closed before it would exceed ``max_samples_per_shard`` samples or a file size of
    ``max_shard_bytes`` (tar pads files to 10 KiB records; a single larger sample gets its own shard).
    :class:`BadSample` items are counted under ``skipped`` in the manifest. Everything is written to a hidden
    folder beside ``output`` first and moved into place at the end (the manifest last; shards of an earlier
    build that the new manifest does not list are removed), so an interrupted or failed build leaves
    ``output`` as it was.

    Args:
        items: Samples, and inputs already found bad.
        output: The shard folder.
        format: The samples' format (recorded in the manifest).
        max_samples_per_shard: Samples per shard at most.
        max_shard_bytes: Bytes per shard file at most.
        strict: Fail, writing nothing, if any input was skipped.

    Returns:
        The manifest: ``{"format", "num_samples", "shards": [{"name", "num_samples", "num_bytes"}], "skipped"}``.

    Raises:
        ValueError: On non-positive limits, or a duplicate sample key.
        StrictBuildError: With ``strict``, when inputs were skipped (counts by reason in the message).
    """
    if max_samples_per_shard < 1 or max_shard_bytes < 1:
        raise ValueError("max_samples_per_shard and max_shard_bytes must be positive")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {output} exists and is not a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        manifest = _write(items, staging, format, max_samples_per_shard, max_shard_bytes)
        skipped = sum(manifest["skipped"].values())
        if strict and skipped:
            raise StrictBuildError(
                f"--strict: {skipped} input samples were skipped {manifest['skipped']}; nothing was written to {output}"
            )
        _commit(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _write(
    items: Iterable[ShardItem | BadSample], output: Path, format: str, max_samples_per_shard: int, max_shard_bytes: int
) -> dict[str, Any]:
    """Write the shards and manifest of ``items`` into the empty folder ``output``."""
    shards: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    skip_log = SkipLog(log)
    tar: tarfile.TarFile | None = None
    count = size = 0

    def close() -> None:
        if tar is not None:
            tar.close()
            shards[-1].update(num_samples=count, num_bytes=(output / shards[-1]["name"]).stat().st_size)

    for item in items:
        if isinstance(item, BadSample):
            skipped[item.reason] += 1
            skip_log(format, item)
            continue
        if item.key in seen or "." in item.key:
            raise ValueError(f"sample key {item.key!r} is duplicated or contains a dot")
        seen.add(item.key)
        payload = json.dumps(item.data, sort_keys=True, ensure_ascii=False).encode("utf-8")
        sample_size = _tar_size([len(payload), *(len(b) for _, b in item.images)])
        if tar is None or count >= max_samples_per_shard or _file_size(size + sample_size) > max_shard_bytes:
            close()
            shards.append({"name": f"shard-{len(shards):06d}.tar"})
            # stays open across samples until the shard is full; close() ends it
            tar = tarfile.open(output / shards[-1]["name"], "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
            count = size = 0
        _member(tar, f"{item.key}.json", payload)
        for suffix, data in item.images:
            _member(tar, f"{item.key}.{suffix}", data)
        count, size = count + 1, size + sample_size
    close()
    manifest = {
        "format": format,
        "num_samples": sum(s["num_samples"] for s in shards),
        "shards": shards,
        "skipped": dict(sorted(skipped.items())),
    }
    (output / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _commit(staging: Path, output: Path) -> None:
    """Move a finished build from ``staging`` into ``output`` (the manifest last)."""
    if not output.exists():
        staging.rename(output)
        return
    old = output / MANIFEST
    try:
        previous = {shard["name"] for shard in json.loads(old.read_text())["shards"]} if old.is_file() else set()
    except (ValueError, KeyError, TypeError):
        previous = set()
    names = {path.name for path in staging.iterdir()} - {MANIFEST}
    for name in sorted(names):
        os.replace(staging / name, output / name)
    for name in previous - names:  # shards of the earlier build that the new manifest does not list
        (output / name).unlink(missing_ok=True)
    os.replace(staging / MANIFEST, output / MANIFEST)


def _why(err: Exception) -> str:
    """An error's reason without the (possibly very long) file name that ``OSError`` repeats."""
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)[:200]


def _extension(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """The member extension of image ``data``, after decoding it as training would (at a small size).

    Raises:
        BadSample: ``corrupt_image`` or ``too_many_pixels``, naming the image.
    """
    image = EncodedImage.open(data, f"image {short_path(name)}", max_pixels=max_pixels)
    image.decode(size=(1, 1), max_pixels=max_pixels)  # the whole stream (a JPEG at 1/8 scale), EXIF orientation
    kind = image.format.lower()
    return {"jpeg": "jpg", "": "png"}.get(kind, kind)


def _item(key: str, format: str, data: Any, load: Any, max_pixels: int | None) -> ShardItem:
    """Validate ``data`` and load its images with ``load(ref) -> (bytes, name)``; rename refs to members."""
    refs = validate(format, data, key)
    images = []
    for i, ref in enumerate(refs):
        payload, name = load(ref)
        images.append((f"{i}.{_extension(payload, name, max_pixels)}", payload))
    members = iter(suffix for suffix, _ in images)
    stored = dict(data, images=[None if ref is None else next(members) for ref in data["images"]])
    return ShardItem(key, stored, images)


def read_jsonl_folder(
    folder: str | Path, format: str, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Iterator[ShardItem | BadSample]:
    """Samples of every ``*.jsonl`` file in ``folder`` (sorted), image refs relative to the file's folder.

    Keys are ``<file stem>_<line number>`` (0-based). Bad lines (and lines with an image that does not decode,
    cannot be read, or decodes to more than ``max_image_pixels``) come out as :class:`BadSample`.
    """
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl files in {folder}")
    for path in files:
        base = path.parent

        def load(ref: str, base: Path = base) -> tuple[bytes, str]:
            file = base / ref
            try:
                return file.read_bytes(), str(file)
            except FileNotFoundError as err:
                raise BadSample("missing_image", f"{short_path(file)} does not exist") from err
            except (OSError, ValueError) as err:  # a name too long, a folder, no permission, a NUL byte
                raise BadSample("missing_image", f"cannot read {short_path(file)}: {_why(err)}") from err

        with path.open("rb") as lines:
            for number, line in enumerate(lines):
                key = f"{path.stem.replace('.', '_')}_{number:09d}"
                try:
                    try:
                        data = json.loads(line.decode("utf-8"))
                    except UnicodeDecodeError as err:
                        raise BadSample("non_utf8_text", f"{path}:{number + 1}: {err}") from err
                    except json.JSONDecodeError as err:
                        raise BadSample("bad_json", f"{path}:{number + 1}: {err}") from err
                    yield _item(key, format, data, load, max_image_pixels)
                except BadSample as bad:
                    yield bad


def read_hf_dataset(
    path: str | Path, format: str, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Iterator[ShardItem | BadSample]:
    """Rows of a ``datasets.Dataset.save_to_disk`` folder with the format's columns.

    ``images`` entries may be PIL images (an ``Image`` feature), ``{"bytes": ..., "path": ...}`` dicts or
    file paths. Keys are ``row_<index>``.
    """
    from datasets import load_from_disk

    dataset = load_from_disk(str(path))

    def load(ref: Any) -> tuple[bytes, str]:
        if isinstance(ref, Image.Image):
            buffer = io.BytesIO()
            ref.save(buffer, format=ref.format or "PNG")
            return buffer.getvalue(), "PIL image"
        if isinstance(ref, dict) and ref.get("bytes"):
            return ref["bytes"], ref.get("path") or "bytes"
        if isinstance(ref, str):
            try:
                return Path(ref).read_bytes(), ref
            except (OSError, ValueError) as err:
                raise BadSample("missing_image", f"cannot read image {short_path(ref)}: {_why(err)}") from err
        raise BadSample("missing_image", f"cannot load image {short_path(ref, 80)!r}")

    for index, row in enumerate(dataset):
        key = f"row_{index:09d}"
        images = row.get("images")
        refs = (
            [None if ref is None else f"#{i}" for i, ref in enumerate(images)] if isinstance(images, list) else images
        )
        try:
            fetch = lambda ref, images=images: load(images[int(ref[1:])])  # noqa: E731
            item = _item(key, format, dict(row, images=refs), fetch, max_image_pixels)
        except BadSample as bad:
            yield bad
            continue
        item.data = {k: v for k, v in item.data.items() if not isinstance(v, Image.Image | bytes)}
        yield item


def read_input(
    path: str | Path, format: str, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Iterator[ShardItem | BadSample]:
    """Dispatch on the input layout: a saved HF dataset folder, a JSONL file or a folder of JSONL files.

    Raises:
        FileNotFoundError: If ``path`` does not exist, or a folder holds no ``*.jsonl`` file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.is_dir() and (path / "dataset_info.json").exists() and not list(path.glob("*.jsonl")):
        return read_hf_dataset(path, format, max_image_pixels)
    if path.is_dir() and not list(path.glob("*.jsonl")):
        raise FileNotFoundError(f"no *.jsonl files in {path}")
    return read_jsonl_folder(path, format, max_image_pixels)
