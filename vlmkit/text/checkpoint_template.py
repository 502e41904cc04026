r"""Conversations rendered with a checkpoint's own Jinja chat template, token for token as transformers does.

For a checkpoint such as Idefics2 the text the model was trained on is defined by transformers: the chat template
(``processor.apply_chat_template``), then the processor's string rules, then one call of the tokenizer on the whole
string (BOS only if the tokenizer adds it). The string rules are those of one of two processor families
(:data:`ProcessorRules`):

- ``"idefics2"``: each ``<image>`` becomes ``<fake_token_around_image>`` + ``<image>`` * n +
  ``<fake_token_around_image>`` (a split image: five such blocks, or vlmkit's marked crops with ``crop_markers``),
  adjacent blocks share their fake token, and a word glued to a closing fake token gets a space;
- ``"idefics3"`` (Idefics3 and SmolVLM): an image becomes ``<fake_token_around_image><global-img>`` +
  ``<image>`` * n + ``<fake_token_around_image>``, a split (tiled) image its rows of
  ``<fake_token_around_image><row_i_col_j>`` + ``<image>`` * n, each row ending with ``\n``, then ``\n`` and the global
  view; nothing else changes (no shared fake tokens, no spaces).

This module follows exactly those steps, so the token ids are the processor's by construction, and derives the
answer-only labels from character spans: an assistant turn's text is what rendering it adds to the generation prompt
of the turns before it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from vlmkit.text.tokenizer import FAKE_IMAGE_TOKEN, IMAGE_TOKEN

ProcessorRules = Literal["idefics2", "idefics3"]
"""Whose processor string rules expand a checkpoint template's images: Idefics2's, or Idefics3's (and SmolVLM's)."""

GLOBAL_IMAGE_TOKEN = "<global-img>"
"""Idefics3's marker of the whole image (the global view) of an image's block."""

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vlmkit.text.template import Encoded, ImageTokens, Turn

__all__ = ["GLOBAL_IMAGE_TOKEN", "ProcessorRules", "encode_with_chat_template", "image_block_text"]

_CLOSING_FAKE = re.compile(rf"{re.escape(FAKE_IMAGE_TOKEN)}(?=[^\s<])")
"""A fake token followed by a word: transformers' Idefics2 processor puts a space between them."""


def image_block_text(layout: ImageTokens, crop_markers: bool, rules: ProcessorRules = "idefics2") -> str:
    """The text that stands for one image, as the processor writes it (Idefics2: before fake tokens are merged).

    ``rules="idefics3"``: Idefics3's and SmolVLM's processor (the global view marked ``<global-img>``, crops
    ``<row_i_col_j>``); ``"idefics2"``: plain blocks, crops marked only with ``crop_markers``.
    """
    from vlmkit.text.template import SplitImageTokens

    fake, image = FAKE_IMAGE_TOKEN, IMAGE_TOKEN
    if isinstance(layout, int):
        return fake + (GLOBAL_IMAGE_TOKEN if rules == "idefics3" else "") + image * layout + fake
    if not isinstance(layout, SplitImageTokens):
        raise ValueError(f"image layout must be an int or a SplitImageTokens, got {layout!r}")
    views = image * layout.tokens_per_image
    if not crop_markers and rules == "idefics2":  # Idefics2: the crops then the whole image, one block each
        return (fake + views + fake) * (layout.rows * layout.cols + 1)
    block = ""  # Idefics3: <fake><row_r_col_c><image>*n per crop, rows on lines, then the global view
    for r in range(layout.rows):
        block += "".join(f"{fake}<row_{r + 1}_col_{c + 1}>{views}" for c in range(layout.cols)) + "\n"
    return block + f"\n{fake}{GLOBAL_IMAGE_TOKEN}{views}{fake}"


def encode_with_chat_template(
    tokenizer: PreTrainedTokenizerBase,
    chat_template: str,
    turns: Sequence[Turn],
    layouts: Sequence[ImageTokens],
    add_generation_prompt: bool,
    train_on: Literal["assistant", "all"],
    crop_markers: bool,
    rules: ProcessorRules = "idefics2",
) -> Encoded:
    """Render ``turns`` with ``chat_template`` and the processor's image rules, then tokenize the whole text.

    Turns of role ``text`` (plain text for base models) are joined as they are, without the template, as a prompt
    given straight to the processor; they cannot be mixed with chat turns.

    Args:
        tokenizer: A fast tokenizer holding the image tokens (its offsets map tokens back to the text).
        chat_template: The checkpoint's Jinja chat template.
        turns: The conversation (image counts already checked against ``layouts``).
        layouts: Per image, its placeholder count or split layout.
        add_generation_prompt: End with the template's generation prompt.
        train_on: ``"assistant"``: label each assistant turn's answer (the text its rendering adds after the
            generation prompt, trailing whitespace excluded); ``"all"``: every token outside the image blocks.
        crop_markers: Mark the crops of split images Idefics3's way under Idefics2's rules (``"idefics3"``
            always marks them); ``False``: Idefics2's plain blocks.
        rules: The processor family whose string rules expand the images (:data:`ProcessorRules`).

    Returns:
        Token ids, labels and image block spans, as :meth:`ChatTemplate.encode <vlmkit.text.ChatTemplate.encode>`.

    Raises:
        ValueError: If a text segment holds ``<image>`` or ``<fake_token_around_image>`` (images are image segments),
            chat and ``text`` turns are mixed, the template is not prefix-stable (a turn's rendering changes when
            turns follow it), or the tokenizer is not a fast tokenizer.
    """
    from vlmkit.text.template import IGNORE_INDEX, Encoded, _parse_segment

    messages = []
    for index, turn in enumerate(turns):
        content = []
        for segment in turn.content:
            kind, text = _parse_segment(segment)
            if kind == "text" and (IMAGE_TOKEN in text or FAKE_IMAGE_TOKEN in text):
                raise ValueError(
                    f"turn {index} ({turn.role}): text holds {IMAGE_TOKEN} or {FAKE_IMAGE_TOKEN}; give images as "
                    "{'type': 'image'} segments"
                )
            content.append({"type": "image"} if kind == "image" else {"type": "text", "text": text})
        messages.append({"role": turn.role, "content": content})

    raw = [turn.role == "text" for turn in turns]
    regions: list[tuple[int, int]] = []  # trained character spans of the rendered text
    if any(raw):
        if not all(raw):
            raise ValueError("plain 'text' turns cannot be mixed with chat turns when rendering a chat template")
        rendered = "".join(
            IMAGE_TOKEN if part["type"] == "image" else part["text"] for m in messages for part in m["content"]
        )
    else:

        def render(conversation: list[dict], generation_prompt: bool) -> str:
            return tokenizer.apply_chat_template(
                conversation, chat_template=chat_template, add_generation_prompt=generation_prompt, tokenize=False
            )

        rendered = render(messages, add_generation_prompt)
        for index, turn in enumerate(turns):
            if turn.role != "assistant" or train_on == "all":
                continue
            prompt, through = render(messages[:index], True), render(messages[: index + 1], False)
            if not (through.startswith(prompt) and rendered.startswith(through)):
                raise ValueError(
                    f"the chat template is not prefix-stable at turn {index}: the rendering of the turns before an "
                    "answer (with the generation prompt) must begin the rendering with the answer, which must begin "
                    "the whole conversation; answer-only labels cannot be located"
                )
            regions.append((len(prompt), len(through.rstrip())))

    text, block_spans, shift = _expand_images(rendered, layouts, crop_markers, rules)
    regions = [(shift(start), shift(end)) for start, end in regions]
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: rendering a chat template needs offsets")
    bos = tokenizer.bos_token
    encoding = tokenizer(
        text,
        add_special_tokens=not (bos and text.startswith(bos)),  # as processor.apply_chat_template: never two BOS
        return_offsets_mapping=True,
    )
    ids, offsets = list(encoding["input_ids"]), list(encoding["offset_mapping"])

    labels = list(ids)
    block_starts = [start for start, _ in block_spans]
    token_spans: list[list[int]] = [[] for _ in block_spans]  # token indices of each image block
    for i, (start, end) in enumerate(offsets):
        block = bisect.bisect_right(block_starts, start) - 1
        in_block = start < end and block >= 0 and start < block_spans[block][1]
        if in_block:
            token_spans[block].append(i)
        trained = train_on == "all" or any(a <= start < b for a, b in regions)
        if start == end or in_block or not trained:  # start == end: added by the tokenizer (BOS, EOS)
            labels[i] = IGNORE_INDEX
    image_spans = [(indices[0], indices[-1] + 1) for indices in token_spans]
    return Encoded(ids, labels, image_spans)


def _expand_images(rendered: str, layouts: Sequence[ImageTokens], crop_markers: bool, rules: ProcessorRules):
    """The processor's string rules, applied piece by piece so the image blocks' spans are known.

    Idefics2's merge adjacent fake tokens and space a word off a closing fake token; Idefics3's (SmolVLM's) only
    replace each ``<image>``.

    Returns:
        The text, each image block's ``(start, end)`` character span in it, and the map of a character position
        of ``rendered`` (outside ``<image>``) to its position in the text.
    """
    pieces = rendered.split(IMAGE_TOKEN)
    if len(pieces) - 1 != len(layouts):
        raise ValueError(
            f"the chat template rendered {len(pieces) - 1} {IMAGE_TOKEN} for {len(layouts)} images; it must render "
            f"each image segment as one {IMAGE_TOKEN}"
        )
    fake = FAKE_IMAGE_TOKEN
    if fake in rendered:
        raise ValueError(f"the chat template's text holds {fake} outside image blocks: {rendered!r}")
    idefics2 = rules == "idefics2"
    blocks = [image_block_text(layout, crop_markers, rules) for layout in layouts]
    text, spans, moves = pieces[0], [], [(0, 0)]  # moves: (start in rendered, start in text) of each piece
    position = len(pieces[0])
    for piece, block in zip(pieces[1:], blocks):
        if idefics2:
            block = block.replace(fake * 2, fake)  # the crops of a split image share their fake tokens
            if text.endswith(fake):  # and so do adjacent images; the shared one belongs to the first
                block = block.removeprefix(fake)
        spans.append((len(text), len(text) + len(block)))
        text += block
        if idefics2 and _CLOSING_FAKE.match(fake + piece[:1]):
            text += " "  # the processor keeps a word glued to an image block a word of its own
        position += len(IMAGE_TOKEN)
        moves.append((position, len(text)))
        text += piece
        position += len(piece)

    # the processor's own operations on the whole text, to confirm the piecewise result
    expected = "".join(piece + block for piece, block in zip(pieces, [*blocks, ""]))
    if idefics2:
        expected = _CLOSING_FAKE.sub(fake + " ", expected.replace(fake * 2, fake))
    if text != expected:
        raise ValueError(f"the chat template's text holds {fake} outside image blocks: {rendered!r}")
    move_starts = [start for start, _ in moves]

    def shift(point: int) -> int:
        piece = bisect.bisect_right(move_starts, point) - 1
        return moves[piece][1] + point - moves[piece][0]

    return text, spans, shift
