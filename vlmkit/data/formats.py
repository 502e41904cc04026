"""The four sample formats of pretraining and instruction tuning (Idefics2 paper, sections 4.1-4.2).

Every format is one JSON object plus its images, stored the same way in a JSONL line, a saved HF
``datasets`` row and a webdataset sample; ``images`` always lists the images in text order (``null``
marks a text position of an interleaved document). Validation raises :class:`BadSample` with a
``reason`` (a short counter name) so readers can skip, count and report instead of crashing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from vlmkit.text.template import Turn

Format = Literal["interleaved", "pair", "pdf", "conversation"]
"""``interleaved`` (OBELICS documents), ``pair`` (image + caption), ``pdf`` (page + its text),
``conversation`` (The Cauldron: images + user/assistant turns, or text only)."""

FORMATS: tuple[str, ...] = get_args(Format)

CaptionField = Literal["caption", "synthetic_caption"]
"""Which caption of an image-text pair to train on (paper Table 6: synthetic captions help a little)."""


class BadSample(Exception):
    """A sample that cannot be used; ``reason`` is the counter it is reported under.

    Args:
        reason: Short counter name, e.g. ``corrupt_image``, ``missing_field``, ``non_utf8_text``.
        detail: Human-readable detail naming the sample and what is wrong.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Record:
    """One decoded sample of any format.

    Attributes:
        key: The sample's key (``__key__`` in a shard, the line number in a JSONL file).
        format: One of :data:`FORMATS`.
        data: The JSON structure (see :func:`validate`).
        images: The images, in the order of the non-null entries of ``data["images"]``: PIL images, or (from
            shards) :class:`~vlmkit.data.image_decode.EncodedImage` whose header was checked and whose pixels are
            decoded by the renderer, only if truncation keeps them.
    """

    key: str
    format: str
    data: dict[str, Any]
    images: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class PassEnd:
    """Marks the end of one pass of a source's reader over its shards, in an endless stream.

    A mixture stops the run when a reader has visited every shard it can be given without one usable sample
    (the source would otherwise be read forever without yielding anything).

    Attributes:
        shards: The shards this pass read.
        possible: Every shard this reader can be given (all of them when the shard order is shuffled).
    """

    shards: tuple[str, ...]
    possible: tuple[str, ...]


def _need(data: dict[str, Any], name: str, kind: type | tuple[type, ...], key: str) -> Any:
    if name not in data:
        raise BadSample("missing_field", f"sample {key!r} has no {name!r} field")
    value = data[name]
    if not isinstance(value, kind):
        raise BadSample("missing_field", f"sample {key!r}: field {name!r} must be {kind}, got {type(value).__name__}")
    return value


def validate(format: str, data: Any, key: str = "?") -> list[str]:
    """Check ``data`` against ``format``'s layout and return its image references in text order.

    Layouts (``images`` entries are member names like ``"0.png"`` in a shard, paths in a JSONL file):

    - ``interleaved``: ``{"texts": [str | null, ...], "images": [null | ref, ...]}``, equal lengths,
      exactly one of the two set at each position (OBELICS).
    - ``pair``: ``{"images": [ref], "caption": str, "synthetic_caption": str (optional)}``.
    - ``pdf``: ``{"images": [ref], "text": str}``.
    - ``conversation``: ``{"images": [ref, ...] (may be empty), "texts": [{"user": str, "assistant": str}, ...]}``
      (The Cauldron; the images precede the first user message).

    Returns:
        The non-null image references, in order.

    Raises:
        BadSample: ``missing_field`` (absent or mistyped field), ``bad_layout`` (inconsistent structure)
            or ``unknown_format``.
    """
    if format not in FORMATS:
        raise BadSample("unknown_format", f"sample {key!r}: format {format!r} is not one of {FORMATS}")
    if not isinstance(data, dict):
        raise BadSample("bad_layout", f"sample {key!r}: expected a JSON object, got {type(data).__name__}")
    images = _need(data, "images", list, key)
    if format == "interleaved":
        texts = _need(data, "texts", list, key)
        if len(texts) != len(images):
            raise BadSample("bad_layout", f"sample {key!r}: {len(texts)} texts but {len(images)} images entries")
        for i, (text, image) in enumerate(zip(texts, images)):
            if (text is None) == (image is None) or not isinstance(text if image is None else image, str):
                raise BadSample("bad_layout", f"sample {key!r}: position {i} must hold one text or one image")
        if not any(texts):
            raise BadSample("missing_field", f"sample {key!r}: interleaved document without text")
    elif format in ("pair", "pdf"):
        if len(images) != 1 or not isinstance(images[0], str):
            raise BadSample("bad_layout", f"sample {key!r}: a {format} sample holds exactly one image")
        _need(data, "caption" if format == "pair" else "text", str, key)
    else:
        turns = _need(data, "texts", list, key)
        if not turns:
            raise BadSample("missing_field", f"sample {key!r}: conversation without turns")
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise BadSample("bad_layout", f"sample {key!r}: turn {i} is not an object")
            _need(turn, "user", str, f"{key}/turn {i}")
            _need(turn, "assistant", str, f"{key}/turn {i}")
        if not all(isinstance(image, str) for image in images):
            raise BadSample("bad_layout", f"sample {key!r}: conversation images must all be set")
    return [image for image in images if image is not None]


def to_turns(
    record: Record, caption_field: CaptionField = "caption", rng: random.Random | None = None
) -> tuple[list[Turn], bool]:
    """The turns the chat template renders for ``record``, and whether only assistant text is trained.

    Pretraining formats become one raw-text turn (no role prefix) trained on every text token;
    conversations become user/assistant turns with answer-only loss. With ``rng`` the question/answer
    pairs of a multi-turn conversation are shuffled (paper section 4.2).

    Raises:
        BadSample: ``missing_field`` when ``caption_field`` is absent from a pair.
    """
    data, image = record.data, {"type": "image"}
    if record.format == "interleaved":
        content = [image if text is None else text for text in data["texts"]]
        return [Turn("text", content)], False
    if record.format == "pair":
        caption = data.get(caption_field)
        if not isinstance(caption, str):
            raise BadSample("missing_field", f"sample {record.key!r} has no {caption_field!r} field")
        return [Turn("text", [image, caption])], False
    if record.format == "pdf":
        return [Turn("text", [image, data["text"]])], False
    pairs = list(data["texts"])
    if rng is not None and len(pairs) > 1:
        rng.shuffle(pairs)
    turns = []
    for i, pair in enumerate(pairs):
        user = [image] * len(record.images) if i == 0 else []
        turns += [Turn("user", [*user, pair["user"]]), Turn("assistant", [pair["assistant"]])]
    return turns, True
