"""Write webdataset tar shards, deterministically, from a folder of images + JSONL or a saved HF dataset.

A sample is stored as ``<key>.json`` (its structure, see :func:`vlmkit.data.formats.validate`) and
``<key>.<i>.<ext>`` per image, where the JSON's ``images`` entries are the member suffixes ``"<i>.<ext>"``.
Image bytes are copied as given (never re-encoded); tar headers carry no time, user or permissions
that vary, so the same input gives byte-identical shards. ``manifest.json`` lists every shard with
its sample count and size, and the inputs skipped by reason.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlmkit.data.formats import BadSample, validate

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


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
) -> dict[str, Any]:
    """Write ``items`` to ``output/shard-000000.tar``, ... and ``output/manifest.json``.

    A shard is closed before it would exceed ``max_samples_per_shard`` samples or a file size of
    ``max_shard_bytes`` (tar pads files to 10 KiB records; a single larger sample gets its own shard).
    :class:`BadSample` items are counted under ``skipped`` in the manifest.

    Returns:
        The manifest: ``{"format", "num_samples", "shards": [{"name", "num_samples", "num_bytes"}], "skipped"}``.

    Raises:
        ValueError: On non-positive limits, or a duplicate sample key.
    """
    if max_samples_per_shard < 1 or max_shard_bytes < 1:
        raise ValueError("max_samples_per_shard and max_shard_bytes must be positive")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    tar: tarfile.TarFile | None = None
    count = size = 0

    def close() -> None:
        if tar is not None:
            tar.close()
            shards[-1].update(num_samples=count, num_bytes=(output / shards[-1]["name"]).stat().st_size)

    for item in items:
        if isinstance(item, BadSample):
            skipped[item.reason] += 1
            log.warning("skipping %s", item)
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


def _extension(data: bytes, name: str) -> str:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            kind = (image.format or "").lower()
    except Exception as err:
        raise BadSample("corrupt_image", f"image {name}: {err}") from err
    return {"jpeg": "jpg", "": "png"}.get(kind, kind)


def _item(key: str, format: str, data: Any, load: Any) -> ShardItem:
    """Validate ``data`` and load its images with ``load(ref) -> (bytes, name)``; rename refs to members."""
    refs = validate(format, data, key)
    images = []
    for i, ref in enumerate(refs):
        payload, name = load(ref)
        images.append((f"{i}.{_extension(payload, name)}", payload))
    members = iter(suffix for suffix, _ in images)
    stored = dict(data, images=[None if ref is None else next(members) for ref in data["images"]])
    return ShardItem(key, stored, images)


def read_jsonl_folder(folder: str | Path, format: str) -> Iterator[ShardItem | BadSample]:
    """Samples of every ``*.jsonl`` file in ``folder`` (sorted), image refs relative to the file's folder.

    Keys are ``<file stem>_<line number>`` (0-based). Bad lines come out as :class:`BadSample`.
    """
    folder = Path(folder)
    files = [folder] if folder.is_file() else sorted(folder.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl files in {folder}")
    for path in files:
        base = path.parent

        def load(ref: str, base: Path = base) -> tuple[bytes, str]:
            file = base / ref
            if not file.is_file():
                raise BadSample("missing_image", f"{file} does not exist")
            return file.read_bytes(), str(file)

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
                    yield _item(key, format, data, load)
                except BadSample as bad:
                    yield bad


def read_hf_dataset(path: str | Path, format: str) -> Iterator[ShardItem | BadSample]:
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
        if isinstance(ref, str) and Path(ref).is_file():
            return Path(ref).read_bytes(), ref
        raise BadSample("missing_image", f"cannot load image {str(ref)[:80]!r}")

    for index, row in enumerate(dataset):
        key = f"row_{index:09d}"
        images = row.get("images")
        refs = (
            [None if ref is None else f"#{i}" for i, ref in enumerate(images)] if isinstance(images, list) else images
        )
        try:
            item = _item(key, format, dict(row, images=refs), lambda ref, images=images: load(images[int(ref[1:])]))
        except BadSample as bad:
            yield bad
            continue
        item.data = {k: v for k, v in item.data.items() if not isinstance(v, Image.Image | bytes)}
        yield item


def read_input(path: str | Path, format: str) -> Iterator[ShardItem | BadSample]:
    """Dispatch on the input layout: a saved HF dataset folder, a JSONL file or a folder of JSONL files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.is_dir() and (path / "dataset_info.json").exists() and not list(path.glob("*.jsonl")):
        return read_hf_dataset(path, format)
    return read_jsonl_folder(path, format)
