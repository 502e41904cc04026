"""Read webdataset shards of one format: shard split per reader, seeded shuffling, decoding with counted skips.

Readers (``node_rank * num_workers + worker``) get disjoint shard lists ``shards[reader::readers]`` of
a shard order shuffled identically on every reader (``split_by_node`` then ``split_by_worker`` in
webdataset terms). Shards are opened by webdataset (local paths, ``file://`` and ``pipe:`` URLs, so
``pipe:aws s3 cp s3://bucket/shard-000000.tar -`` works unchanged). Every random choice comes from a
``random.Random`` seeded by ``(seed, source, reader, pass)``, so a stream is reproducible and a
:class:`~torchdata.stateful_dataloader.StatefulDataLoader` can resume it by fast-forwarding.
"""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

from PIL import Image

from vlmkit.data.formats import FORMATS, BadSample, CaptionField, Format, Record, validate
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


def decode_sample(raw: dict[str, Any], format: str, max_aspect_ratio: float) -> Record:
    """Decode one raw webdataset sample (``__key__``, ``json`` and image members as bytes).

    Raises:
        BadSample: ``missing_field``, ``non_utf8_text``, ``bad_json``, ``bad_layout``, ``missing_image``,
            ``extreme_aspect_ratio`` or ``corrupt_image``, naming the shard and key.
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
        try:
            with Image.open(io.BytesIO(raw[ref])) as image:
                width, height = image.size
                if max(width, height) > max_aspect_ratio * min(width, height):
                    raise BadSample("extreme_aspect_ratio", f"sample {key}: image {ref} is {width}x{height}")
                image.load()
                images.append(image.copy())
        except BadSample:
            raise
        except Exception as err:  # PIL raises many types on bad bytes
            raise BadSample("corrupt_image", f"sample {key}: image {ref}: {err}") from err
    return Record(str(raw.get("__key__")), format, data, images)


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
        image_splitting: float = 0.0,
        eval_image_splitting: bool = False,
        name: str | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if weight <= 0:
            raise ValueError(f"weight must be > 0, got {weight}")
        if min_image_size is not None and min_image_size > max_image_size:
            raise ValueError(f"min_image_size={min_image_size} exceeds max_image_size={max_image_size}")
        if not 0.0 <= image_splitting <= 1.0:
            raise ValueError(f"image_splitting must be in [0, 1], got {image_splitting}")
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
        """Raw samples of ``shards``; tar errors and empty shards become :class:`BadSample` markers.

        A tar cut at a member boundary reads as a shorter valid tar; it is caught by comparing with the
        manifest's sample count when the shards come from a directory with a manifest.
        """
        from webdataset import tarfile_samples

        expected = manifest_counts(self.urls)
        for url in shards:
            errors: list[Exception] = []
            n = 0
            for sample in tarfile_samples(
                [{"url": url}], handler=lambda err, errors=errors: errors.append(err) or True
            ):
                n += 1
                yield sample
            if errors:
                reason = "empty_shard" if n == 0 and "empty file" in str(errors[0]) else "truncated_tar"
                yield BadSample(reason, f"shard {url}: {errors[0]}")
            elif n == 0:
                yield BadSample("empty_shard", f"shard {url} holds no samples")
            elif n < expected.get(url, 0):
                yield BadSample("truncated_tar", f"shard {url}: {n} samples read, its manifest lists {expected[url]}")

    def records(self, rank: int, world: int, seed: int, endless: bool) -> Iterator[Record | BadSample]:
        """Decoded samples for reader ``rank`` of ``world``, shuffled; bad ones as :class:`BadSample`.

        Args:
            rank: Global reader index (``node_rank * num_workers + worker``).
            world: Number of readers.
            seed: Mixture seed.
            endless: Cycle through passes (training) or read one pass (validation).
        """
        for pass_, shards in self._shards(rank, world, seed, endless):
            rng = random.Random(f"vlmkit.samples:{seed}:{self.name}:{rank}:{pass_}")
            for raw in shuffled(self._raw(shards), self.shuffle_buffer, rng):
                if isinstance(raw, BadSample):
                    yield raw
                    continue
                try:
                    yield decode_sample(raw, self.format, self.max_aspect_ratio)
                except BadSample as bad:
                    yield bad
