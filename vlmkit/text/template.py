"""Idefics2's chat layout, rendered straight to token ids with answer-only labels.

Each text segment is tokenized on its own and the ids are concatenated, so the
label mask comes from the template's own token spans (never from searching the
decoded string). Images expand to Idefics2's placeholder block; consecutive
images share the ``<fake_token_around_image>`` between them, as in Idefics2.
A model imported from a checkpoint renders with the checkpoint's own Jinja chat
template instead (``chat_template``), token for token as transformers' processor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from vlmkit.text.tokenizer import END_OF_UTTERANCE_TOKEN, FAKE_IMAGE_TOKEN, IMAGE_TOKEN

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.text.checkpoint_template import ProcessorRules

IGNORE_INDEX = -100
"""Label value excluded from the loss (PyTorch's cross-entropy default)."""

Segment = str | Mapping[str, str]
"""A piece of a turn: plain text, ``{"type": "text", "text": ...}`` or ``{"type": "image"}``."""


@dataclass(frozen=True)
class Turn:
    """One message of a conversation (The Cauldron / transformers messages layout).

    Attributes:
        role: Who speaks; assistant turns are the ones trained on. ``text`` is plain text with no
            role prefix and no end of utterance (prompts for base, non-chat models).
        content: Text and image segments in order.
    """

    role: Literal["system", "user", "assistant", "text"]
    content: Sequence[Segment] = field(default_factory=tuple)


@dataclass(frozen=True)
class SplitImageTokens:
    """The placeholders of a split image: ``rows x cols`` crops followed by the whole image.

    Attributes:
        tokens_per_image: Placeholders for each of the ``rows * cols + 1`` views.
        rows: Crop rows (2 for the paper's 4 quadrants; with tiling, chosen from the image's resolution).
        cols: Crop columns.
    """

    tokens_per_image: int
    rows: int = 2
    cols: int = 2


ImageTokens = int | SplitImageTokens
"""Per image: its number of placeholders, or the layout of its split views."""


def __getattr__(name: str):
    if name == "SplitImage":  # the name before SplitImageTokens
        from vlmkit.deprecation import warn_deprecated

        warn_deprecated("vlmkit.text.template.SplitImage is now SplitImageTokens")
        return SplitImageTokens
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Encoded:
    """A rendered conversation: ``input_ids`` and ``labels`` have equal length.

    Attributes:
        input_ids: Token ids.
        labels: Training labels (``-100`` where untrained).
        image_spans: Per image, ``(start, end)`` (end exclusive) of its whole block in ``input_ids``: its fake
            tokens, crop markers and placeholders (every view of a split image). An opening fake token shared
            with the previous image belongs to the previous block.
    """

    input_ids: list[int]
    labels: list[int]
    image_spans: list[tuple[int, int]] = field(default_factory=list)


class ChatTemplate:
    r"""Render conversations in Idefics2's ``User:`` / ``Assistant:`` layout with ``<end_of_utterance>``.

    vlmkit's own layout (``chat_template=None``) is ``User:<image block>text<end_of_utterance>\nAssistant: answer``:
    the role prefix is followed directly by the turn's first segment, and text follows an image block directly.
    With a checkpoint's ``chat_template`` (Idefics2: ``User: text`` after a text-first turn's prefix, a space after
    an image block, BOS only if the tokenizer adds it), the ids equal transformers' ``apply_chat_template`` followed
    by the checkpoint's processor (see :mod:`vlmkit.text.checkpoint_template`).

    Args:
        tokenizer: Tokenizer holding the VLM special tokens (see ``load_tokenizer``).
        add_bos: vlmkit's layout: start every sequence with the tokenizer's BOS token when it has one. With a
            ``chat_template``, BOS follows the tokenizer (its ``add_bos_token``), as in transformers.
        train_on: Which tokens get labels: ``"assistant"`` (answer-only loss, for
            instruction data) or ``"all"`` (every text token, for captions/documents).
        crop_markers: Mark each crop of a split image with ``<row_i_col_j>`` and the whole
            image with ``<global-img>`` (Idefics3's layout), so the model can tell crops apart;
            ``False`` gives Idefics2's layout (five plain image blocks in a row).
        chat_template: A checkpoint's Jinja chat template (``VisionLanguageModel.chat_template`` of an imported
            model); ``None``: vlmkit's layout. Needs a fast tokenizer.
        processor_rules: With ``chat_template``, whose processor expands the images: ``"idefics2"`` (plain blocks,
            shared fake tokens, a space after a closing block) or ``"idefics3"`` (Idefics3 and SmolVLM: every
            image marked ``<global-img>``, crops ``<row_i_col_j>``, nothing shared; needs ``crop_markers``).

    Raises:
        ValueError: If the tokenizer lacks the image tokens, or ``"idefics3"`` rules come without crop markers.
    """

    prefixes: Mapping[str, str] = {"system": "System:", "user": "User:", "assistant": "Assistant:", "text": ""}
    """Role prefixes; ``text`` is raw text without a prefix or end of utterance (base-model prompts)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        add_bos: bool = True,
        train_on: Literal["assistant", "all"] = "assistant",
        crop_markers: bool = True,
        chat_template: str | None = None,
        processor_rules: ProcessorRules = "idefics2",
    ) -> None:
        if processor_rules not in ("idefics2", "idefics3"):
            raise ValueError(f"processor_rules must be 'idefics2' or 'idefics3', got {processor_rules!r}")
        if processor_rules == "idefics3" and not crop_markers:
            raise ValueError("processor_rules='idefics3' marks every crop (Idefics3's processor): crop_markers=False")
        self.tokenizer = tokenizer
        self.add_bos = add_bos
        self.train_on = train_on
        self.crop_markers = crop_markers
        self.chat_template = chat_template
        self.processor_rules = processor_rules
        ids = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, FAKE_IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN])
        if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
            raise ValueError("tokenizer lacks the VLM special tokens; load it with vlmkit.text.load_tokenizer")
        self.image_token_id, self.fake_token_id, self.end_of_utterance_id = ids

    def _text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def encode(
        self,
        turns: Sequence[Turn],
        image_token_counts: Sequence[ImageTokens],
        add_generation_prompt: bool = False,
    ) -> Encoded:
        """Render ``turns`` to token ids and labels.

        Args:
            turns: The conversation; assistant turns must be text only.
            image_token_counts: For each image, in order of appearance, its number of placeholder
                tokens or a :class:`SplitImageTokens` layout (crops then the whole image).
            add_generation_prompt: End with ``Assistant:`` so a model can answer.

        Returns:
            The token ids, labels (``-100`` except on trained tokens) and each image's block span.

        Raises:
            ValueError: If the number of image segments differs from
                ``len(image_token_counts)``, or a segment or role is malformed.
        """
        if self.chat_template is not None:
            from vlmkit.text.checkpoint_template import encode_with_chat_template

            _check_turns(turns, len(image_token_counts), self.prefixes)
            return encode_with_chat_template(
                self.tokenizer,
                self.chat_template,
                turns,
                image_token_counts,
                add_generation_prompt,
                self.train_on,
                self.crop_markers,
                self.processor_rules,
            )
        ids: list[int] = []
        labels: list[int] = []
        spans: list[tuple[int, int]] = []
        images_seen = 0

        def emit(tokens: list[int], trained: bool) -> None:
            ids.extend(tokens)
            labels.extend(tokens if trained else [IGNORE_INDEX] * len(tokens))

        if self.add_bos and self.tokenizer.bos_token_id is not None:
            emit([self.tokenizer.bos_token_id], False)
        for turn in turns:
            if turn.role not in self.prefixes:
                raise ValueError(f"unknown role {turn.role!r}; expected one of {sorted(self.prefixes)}")
            trained = self.train_on == "all" or turn.role == "assistant"
            emit(self._text(self.prefixes[turn.role]), self.train_on == "all")
            for i, segment in enumerate(turn.content):
                kind, text = _parse_segment(segment)
                if kind == "image":
                    if turn.role == "assistant":
                        raise ValueError("assistant turns cannot contain images")
                    if images_seen >= len(image_token_counts):
                        raise ValueError(
                            f"conversation has more image segments than images given ({len(image_token_counts)})"
                        )
                    start = len(ids)
                    emit(self._image_block(image_token_counts[images_seen], ids), False)
                    spans.append((start, len(ids)))
                    images_seen += 1
                else:
                    # The answer follows "Assistant:" after one space, as in Idefics2.
                    if turn.role == "assistant" and i == 0 and not text.startswith(" "):
                        text = " " + text
                    emit(self._text(text), trained)
            if turn.role != "text":
                emit([self.end_of_utterance_id], trained)
                emit(self._text("\n"), self.train_on == "all")
        if images_seen != len(image_token_counts):
            raise ValueError(
                f"conversation has {images_seen} image segments but {len(image_token_counts)} images were given"
            )
        if add_generation_prompt:
            emit(self._text(self.prefixes["assistant"]), False)
        return Encoded(ids, labels, spans)

    def _image_block(self, layout: ImageTokens, ids: list[int]) -> list[int]:
        """Placeholders of one image; a fake token already ending ``ids`` is shared."""
        fake, image = self.fake_token_id, self.image_token_id
        if isinstance(layout, int):
            block = [image] * layout + [fake]
            return block if ids and ids[-1] == fake else [fake, *block]
        views = layout.rows * layout.cols + 1
        if not self.crop_markers:  # Idefics2: the crops and the image as consecutive image blocks
            block = ([image] * layout.tokens_per_image + [fake]) * views
            return block if ids and ids[-1] == fake else [fake, *block]
        block: list[int] = []  # Idefics3: <fake><row_r_col_c><image>*n per crop, rows on lines, then the global view
        for r in range(layout.rows):
            for c in range(layout.cols):
                block += [fake, *self._text(f"<row_{r + 1}_col_{c + 1}>"), *[image] * layout.tokens_per_image]
            block += self._text("\n")
        block += [*self._text("\n"), fake, *self._text("<global-img>"), *[image] * layout.tokens_per_image, fake]
        return block


def _check_turns(turns: Sequence[Turn], num_images: int, roles: Mapping[str, str]) -> None:
    """The checks of :meth:`ChatTemplate.encode` (roles, images only in non-assistant turns, image count)."""
    images = 0
    for turn in turns:
        if turn.role not in roles:
            raise ValueError(f"unknown role {turn.role!r}; expected one of {sorted(roles)}")
        for segment in turn.content:
            if _parse_segment(segment)[0] == "image":
                if turn.role == "assistant":
                    raise ValueError("assistant turns cannot contain images")
                images += 1
                if images > num_images:
                    raise ValueError(f"conversation has more image segments than images given ({num_images})")
    if images != num_images:
        raise ValueError(f"conversation has {images} image segments but {num_images} images were given")


def _parse_segment(segment: Segment) -> tuple[Literal["text", "image"], str]:
    if isinstance(segment, str):
        return "text", segment
    kind = segment.get("type")
    if kind == "image":
        return "image", ""
    if kind == "text" and isinstance(segment.get("text"), str):
        return "text", segment["text"]
    raise ValueError(
        f"malformed segment {segment!r}: expected a str, {{'type': 'image'}} or {{'type': 'text', 'text': ...}}"
    )
