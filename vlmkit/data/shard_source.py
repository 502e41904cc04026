"""Read webdataset shards of one format: shard split per reader, seeded shuffling, decoding with counted skips.

Readers (``node_rank * num_workers + worker``) get disjoint shard lists ``shards[reader::readers]`` of
a shard order shuffled identically on every reader (``split_by_node`` then ``split_by_worker`` in
webdataset terms). Shards are opened by webdataset (local paths, ``file://`` and ``pipe:`` URLs, so
``pipe:aws s3 cp s3://bucket/shard-000000.tar -`` works unchanged). Every random choice comes from a
``random.Random`` seeded by ``(seed, source, reader, pass)``, so a stream is reproducible and a
:class:`~torchdata.stateful_dataloader.StatefulDataLoader` can resume it by fast-forwarding. Images are only
opened here (header, EXIF orientation and pixel count checked); the renderer decodes the ones it keeps.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

from vlmkit.data.formats import BadSample, CaptionField, Format, PassEnd, Record, validate
from vlmkit.data.image_decode import DEFAULT_MAX_IMAGE_PIXELS, EncodedImage
from vlmkit.data.mixture import check_source_settings
from vlmkit.data.shards import MANIFEST

log = logging.getLogger(__name__)


def expand_urls(urls: str | list[str]) -> list[str]:
    """Shard URLs from a directory holding ``manifest.json``, a brace pattern, or a list of either.

    Raises:
        ValueError: If nothing is left.
    """
    from webdataset.shardlists import expand_urls as brace_expand

    result: list[str] = []
    for url in [urls] if isinstance(urls, str) else urls:
        path = Path(url)
        if "{" not in url and path.is_dir():
            manifest = path / MANIFEST
            if not manifest.is_file():
                raise ValueError(f"{path} has no {MANIFEST}; build it with `vlmkit data build`")
            result += [str(path / shard["name"]) for shard in json.loads(manifest.read_text())["shards"]]
        else:
            result += brace_expand(url)
    if not result:
        raise ValueError(f"no shards in {urls!r}")
    return result


def manifest_counts(urls: str | list[str]) -> dict[str, int]:
    """``{shard path: samples}`` from the manifests of shard directories (empty for URLs and patterns)."""
    counts: dict[str, int] = {}
    for url in [urls] if isinstance(urls, str) else urls:
        manifest = Path(url) / MANIFEST
        if "{" not in url and manifest.is_file():
            for shard in json.loads(manifest.read_text())["shards"]:
                counts[str(Path(url) / shard["name"])] = shard["num_samples"]
    return counts


def manifest_format(urls: str | list[str]) -> str | None:
    """The format recorded in the manifest of a shard directory (``None`` for URLs and patterns)."""
    for url in [urls] if isinstance(urls, str) else urls:
        manifest = Path(url) / MANIFEST
        if "{" not in url and manifest.is_file():
            return json.loads(manifest.read_text()).get("format")
    return None


def shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Yield ``items`` through a shuffle buffer of ``size`` (``<= 1``: unchanged order)."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


def decode_sample(
    raw: dict[str, Any], format: str, max_aspect_ratio: float, max_image_pixels: int | None = None
) -> Record:
    """Decode one raw webdataset sample (``__key__``, ``json`` and image members as bytes).

    Images are opened, not decoded: their headers are checked (see :class:`EncodedImage`).

    Raises:
        BadSample: ``missing_field``, ``non_utf8_text``, ``bad_json``, ``bad_layout``, ``missing_image``,
            ``extreme_aspect_ratio``, ``too_many_pixels`` or ``corrupt_image``, naming the shard and key.
    """
    key = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
    if "json" not in raw:
        raise BadSample("missing_field", f"sample {key} has no .json member")
    try:
        data = json.loads(raw["json"].decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BadSample("non_utf8_text", f"sample {key}: {err}") from err
    except json.JSONDecodeError as err:
        raise BadSample("bad_json", f"sample {key}: {err}") from err
    images = []
    for ref in validate(format, data, key):
        if ref not in raw:
            raise BadSample("missing_image", f"sample {key} has no member {ref!r}")
        images.append(EncodedImage.open(raw[ref], f"sample {key}: image {ref}", max_aspect_ratio, max_image_pixels))
    return Record(str(raw.get("__key__")), format, data, images)


def _is_local(url: str) -> bool:
    return not url.startswith("pipe:") and ("://" not in url or url.startswith("file://"))


class ShardSource:
    """Webdataset shards of one format, as a mixture source.

    Args:
        urls: A directory written by ``vlmkit data build``, a brace pattern
            (``data/pairs/shard-{000000..000099}.tar``, ``pipe:curl -s https://.../shard-{0..9}.tar``),
            ``file://`` URLs, or a list of these.
        format: The format of every sample (checked against the manifest when there is one).
        weight: Sampling proportion in the mixture (normalised over sources).
        max_length: Token budget per sample (paper: 2048 interleaved, 1536 pairs, 1024 PDFs).
        max_image_size: Longest processed image side for this source (paper stage 1: 384).
        min_image_size: Target shortest processed image side for this source (default: Idefics2's 378,
            capped at ``max_image_size``).
        caption_field: For pairs, which caption to train on (paper Table 6).
        shuffle_turns: Shuffle the question/answer pairs of multi-turn conversations (paper section 4.2).
        shuffle_buffer: Samples in the shuffle buffer (``<= 1``: no sample shuffling).
        shuffle_shards: Shuffle the shard order (per pass, identically on every reader).
        resampled: Draw shards with replacement forever, per reader (no disjointness); else each pass
            reads every shard once, split across readers.
        max_aspect_ratio: Images more elongated than this are skipped (e.g. 20000x20).
        max_image_pixels: Images that would decode to more pixels are skipped before decoding
            (``too_many_pixels``); a JPEG counts at the reduced size it decodes at (1/2 to 1/8 of each side, to
            the size the processor needs), other formats at full size. Bounds a worker's memory per image.
        image_splitting: Chance that a training sample of this source has its images split into 4 crops + the
            whole image (paper section 4.2: 0.5 for instruction data; pretraining splits nothing).
        eval_image_splitting: Split every image when this source is a validation source.
        name: Name in logs; defaults to the format.
    """

    def __init__(
        self,
        urls: str | list[str],
        format: Format,
        weight: float = 1.0,
        max_length: int = 2048,
        max_image_size: int = 980,
        min_image_size: int | None = None,
        caption_field: CaptionField = "caption",
        shuffle_turns: bool = True,
        shuffle_buffer: int = 1000,
        shuffle_shards: bool = True,
        resampled: bool = False,
        max_aspect_ratio: float = 16.0,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        image_splitting: float = 0.0,
        eval_image_splitting: bool = False,
        name: str | None = None,
    ) -> None:
        check_source_settings(format, weight, min_image_size, max_image_size, image_splitting)
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {max_image_pixels}")
        recorded = manifest_format(urls)
        if recorded is not None and recorded != format:
            raise ValueError(f"ShardSource(format={format!r}) but the manifest of {urls!r} says {recorded!r}")
        self.urls = urls
        self.format = format
        self.weight = weight
        self.max_length = max_length
        self.max_image_size = max_image_size
        self.min_image_size = min(378, max_image_size) if min_image_size is None else min_image_size
        self.caption_field = caption_field
        self.shuffle_turns = shuffle_turns
        self.shuffle_buffer = shuffle_buffer
        self.shuffle_shards = shuffle_shards
        self.resampled = resampled
        self.max_aspect_ratio = max_aspect_ratio
        self.max_image_pixels = max_image_pixels
        self.image_splitting = image_splitting
        self.eval_image_splitting = eval_image_splitting
        self.name = name or format

    def _shards(self, rank: int, world: int, seed: int, endless: bool) -> Iterator[tuple[int, list[str]]]:
        """``(pass, this reader's shards)`` for each pass."""
        urls = expand_urls(self.urls)
        for pass_ in count():
            if self.resampled:
                rng = random.Random(f"vlmkit.shards:{seed}:{self.name}:{rank}:{pass_}")
                yield pass_, [rng.choice(urls) for _ in range(max(1, len(urls) // world))]
            else:
                order = list(urls)
                if self.shuffle_shards:
                    random.Random(f"vlmkit.shards:{seed}:{self.name}:{pass_}").shuffle(order)
                mine = order[rank::world]
                if not mine:
                    log.warning("%s: %d shards for %d readers; reader %d gets none", self.name, len(urls), world, rank)
                    return
                yield pass_, mine
            if not (endless or self.resampled):
                return

    def _raw(self, shards: list[str]) -> Iterator[dict[str, Any] | BadSample]:
        """Raw samples of ``shards``; missing shards, tar errors and empty shards become :class:`BadSample` markers.

        A tar cut at a member boundary reads as a shorter valid tar; it is caught by comparing with the
        manifest's sample count when the shards come from a directory with a manifest.
        """
        from webdataset import tarfile_samples

        expected = manifest_counts(self.urls)
        for url in shards:
            if _is_local(url) and not Path(url.removeprefix("file://")).is_file():
                yield BadSample("missing_shard", f"shard {url} does not exist")
                continue
            errors: list[Exception] = []
            n = 0
            for sample in tarfile_samples(
                [{"url": url}], handler=lambda err, errors=errors: errors.append(err) or True
            ):
                n += 1
                yield sample
            if errors:
                reason = "empty_shard" if n == 0 and "empty file" in str(errors[0]) else "truncated_tar"
                if isinstance(errors[0], FileNotFoundError):
                    reason = "missing_shard"
                yield BadSample(reason, f"shard {url}: {errors[0]}")
            elif n == 0:
                yield BadSample("empty_shard", f"shard {url} holds no samples")
            elif n < expected.get(url, 0):
                yield BadSample("truncated_tar", f"shard {url}: {n} samples read, its manifest lists {expected[url]}")

    def records(self, rank: int, world: int, seed: int, endless: bool) -> Iterator[Record | BadSample | PassEnd]:
        """Decoded samples for reader ``rank`` of ``world``, shuffled; bad ones as :class:`BadSample`.

        Args:
            rank: Global reader index (``node_rank * num_workers + worker``).
            world: Number of readers.
            seed: Mixture seed.
            endless: Cycle through passes (training) or read one pass (validation). Endless streams mark the
                end of each pass with a :class:`PassEnd`.
        """
        urls = expand_urls(self.urls)
        possible = tuple(urls) if self.shuffle_shards or self.resampled else tuple(urls[rank::world])
        for pass_, shards in self._shards(rank, world, seed, endless):
            rng = random.Random(f"vlmkit.samples:{seed}:{self.name}:{rank}:{pass_}")
            for raw in shuffled(self._raw(shards), self.shuffle_buffer, rng):
                if isinstance(raw, BadSample):
                    yield raw
                    continue
                try:
                    yield decode_sample(raw, self.format, self.max_aspect_ratio, self.max_image_pixels)
                except BadSample as bad:
                    yield bad
            if endless or self.resampled:
                yield PassEnd(tuple(shards), possible)
