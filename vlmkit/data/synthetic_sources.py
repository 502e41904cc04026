"""Deterministic synthetic samples of all four formats, so recipes and tests need no download.

Sample ``i`` of ``(format, seed)`` is a pure function of its arguments (built on
:func:`vlmkit.data.synthetic.make_sample`). :func:`write_synthetic_jsonl` writes them as a folder of
images + ``data.jsonl``, the input layout of ``vlmkit data build``; :class:`SyntheticSource` serves
them directly to a :class:`~vlmkit.data.mixture.MixtureDataModule`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw

from vlmkit.data.formats import FORMATS, CaptionField, Format, Record
from vlmkit.data.mixture import check_source_settings
from vlmkit.data.synthetic import WORDS, _font, make_sample, noisy_alt_text

_TEXT_ONLY = (
    ("Spell the word {w} backwards.", lambda w: w[::-1]),
    ("How many letters are in the word {w}?", lambda w: str(len(w))),
    ("Write the word {w} in capital letters.", lambda w: w.upper()),
)


def _page(rng: random.Random, width: int, lines: int) -> tuple[Image.Image, str]:
    """A 'PDF page': a few lines of words in dark ink on white, and its text."""
    rows = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))) for _ in range(lines)]
    image = Image.new("RGB", (width, 16 + 20 * lines), (250, 250, 248))
    draw = ImageDraw.Draw(image)
    for i, row in enumerate(rows):
        draw.text((6, 8 + 20 * i), row, fill=(20, 20, 20), font=_font(14))
    return image, "\n".join(rows)


def synthetic_record(
    format: str, seed: int, index: int, min_size: int = 32, max_size: int = 64, alt_text_noise: float = 0.0
) -> Record:
    """Sample ``index`` of the synthetic ``format`` stream of ``seed``.

    Args:
        format: One of :data:`~vlmkit.data.formats.FORMATS`.
        seed: Stream seed.
        index: Sample index.
        min_size: Smallest side of generated shape images, in pixels.
        max_size: Largest side of generated shape images, in pixels.
        alt_text_noise: For pairs, how noisy the web-style ``caption`` (alt-text) is: ``0`` gives the clean
            caption, more gives partly wrong or irrelevant words (:func:`~vlmkit.data.synthetic.noisy_alt_text`);
            ``synthetic_caption`` stays clean (paper Table 6).

    Returns:
        The record (its ``images`` entries are named ``"0.png"``, ``"1.png"``...).

    Raises:
        ValueError: If ``format`` is unknown.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    rng = random.Random(f"vlmkit.sources:{format}:{seed}:{index}")
    key = f"{index:08d}"

    def shape(task: str, offset: int = 0):
        return make_sample(seed, index * 8 + offset, task, min_size, max_size, max_shapes=2)

    if format == "pair":
        sample = shape("caption")
        caption = noisy_alt_text(sample.caption, rng, alt_text_noise) if alt_text_noise > 0 else sample.caption
        data = {"images": ["0.png"], "caption": caption, "synthetic_caption": "an image of " + sample.caption}
        return Record(key, format, data, [sample.image])
    if format == "pdf":
        image, text = _page(rng, 2 * max_size, rng.randint(1, 3))
        return Record(key, format, {"images": ["0.png"], "text": text}, [image])
    if format == "interleaved":
        texts: list[str | None] = []
        images: list[str | None] = []
        pictures = []
        for i in range(rng.randint(1, 3)):
            sample = shape("caption", i)
            texts += [f"Picture {i + 1} shows {sample.caption}", None]
            images += [None, f"{len(pictures)}.png"]
            pictures.append(sample.image)
        texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) + ".")
        images.append(None)
        return Record(key, format, {"texts": texts, "images": images}, pictures)
    if rng.random() < 0.2:  # text-only instruction
        word = rng.choice(WORDS)
        question, answer = rng.choice(_TEXT_ONLY)
        return Record(
            key, format, {"images": [], "texts": [{"user": question.format(w=word), "assistant": answer(word)}]}
        )
    sample = shape(rng.choice(("color", "shape", "position", "count")))
    turns = [{"user": sample.question, "assistant": sample.answer}]
    if rng.random() < 0.5:
        turns.append({"user": "Describe the image.", "assistant": sample.caption})
    return Record(key, format, {"images": ["0.png"], "texts": turns}, [sample.image])


def write_synthetic_jsonl(format: str, num: int, output: str | Path, seed: int = 0) -> Path:
    """Write ``num`` synthetic samples as ``output/data.jsonl`` + ``output/images/*.png`` (``data build`` input).

    Image references in the JSONL are paths relative to ``output``.

    Returns:
        The JSONL path.
    """
    output = Path(output)
    (output / "images").mkdir(parents=True, exist_ok=True)
    path = output / "data.jsonl"
    with path.open("w", encoding="utf-8") as lines:
        for index in range(num):
            record = synthetic_record(format, seed, index)
            names = iter(f"images/{record.key}_{i}.png" for i in range(len(record.images)))
            data = dict(record.data, images=[None if ref is None else next(names) for ref in record.data["images"]])
            for name, image in zip([n for n in data["images"] if n is not None], record.images):
                image.save(output / name)
            lines.write(json.dumps(data, sort_keys=True) + "\n")
    return path


class SyntheticSource:
    """A mixture source generating synthetic samples of one format on the fly (no files).

    Args:
        format: Which format to generate.
        weight: Sampling proportion in the mixture (normalised over sources).
        max_length: Token budget per sample; longer samples are truncated (see ``SampleRenderer``).
        max_image_size: Longest processed image side for this source.
        min_image_size: Target shortest processed image side for this source.
        caption_field: For pairs, which caption to train on.
        alt_text_noise: For pairs, corruption of the alt-text ``caption`` (see :func:`synthetic_record`); the
            same samples with ``caption_field: synthetic_caption`` train on clean captions (paper Table 6).
        shuffle_turns: Shuffle the question/answer pairs of multi-turn conversations.
        image_splitting: Chance that a training sample of this source has its images split into 4 crops + the
            whole image (paper section 4.2: 0.5 for instruction data; pretraining splits nothing).
        eval_image_splitting: Split every image when this source is a validation source.
        seed: Stream seed (sample ``i`` is fixed by it).
        num_samples: Samples per pass; training cycles through passes endlessly.
    """

    def __init__(
        self,
        format: Format,
        weight: float = 1.0,
        max_length: int = 1024,
        max_image_size: int = 64,
        min_image_size: int = 32,
        caption_field: CaptionField = "caption",
        shuffle_turns: bool = True,
        image_splitting: float = 0.0,
        eval_image_splitting: bool = False,
        seed: int = 0,
        num_samples: int = 100_000,
        alt_text_noise: float = 0.0,
    ) -> None:
        check_source_settings(format, weight, min_image_size, max_image_size, image_splitting)
        if not 0.0 <= alt_text_noise <= 1.0:
            raise ValueError(f"alt_text_noise must be in [0, 1], got {alt_text_noise}")
        self.format = format
        self.weight = weight
        self.max_length = max_length
        self.max_image_size = max_image_size
        self.min_image_size = min_image_size
        self.caption_field = caption_field
        self.shuffle_turns = shuffle_turns
        self.image_splitting = image_splitting
        self.eval_image_splitting = eval_image_splitting
        self.seed = seed
        self.num_samples = num_samples
        self.alt_text_noise = alt_text_noise
        self.max_image_pixels: int | None = None  # generated images are small

    @property
    def name(self) -> str:
        """Name used in logs (``synthetic_<format>``)."""
        return f"synthetic_{self.format}"

    def records(self, rank: int, world: int, seed: int, endless: bool) -> Iterator[Record]:
        """Reader ``rank``'s share (every ``world``-th index from ``rank``) of each pass, endlessly or once.

        Args:
            rank: Global reader index (``node_rank * workers + worker``).
            world: Total readers.
            seed: Mixture seed (unused: the stream is fixed by the source's own ``seed``).
            endless: Cycle through passes forever (training) or stop after one (validation).
        """
        while True:
            for index in range(rank, self.num_samples, world):
                yield synthetic_record(self.format, self.seed, index, alt_text_noise=self.alt_text_noise)
            if not endless:
                return
