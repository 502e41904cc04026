"""The paper's evaluation prompts (appendix A.3.1) and few-shot in-context layouts.

Instruction models get the chat template (``User: ... Assistant:``); base models get
plain text with ``Answer:`` after each question. Few-shot support examples, with their
images, come before the query, drawn at random but reproducibly per query.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from vlmkit.data.image_processing import ImageInput
from vlmkit.eval.sample import EvalSample
from vlmkit.text.template import Turn

OPEN_ENDED_PROMPT = "Question: {question}\nGive a very brief answer."
"""Open-ended questions (TextVQA, DocVQA, VQAv2), appendix A.3.1."""
MULTIPLE_CHOICE_PROMPT = "Question: {question}\nChoices:\n{choices}\nAnswer with the letter."
"""Multiple choice (MMMU, MathVista, MMBench), appendix A.3.1."""
CAPTION_PROMPT = "Describe the image briefly."
"""Captioning (COCO)."""

PromptStyle = Literal["open", "multiple_choice", "caption", "raw"]
"""``raw`` is the question as written, for models trained on bare questions (the synthetic tasks)."""
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def format_question(sample: EvalSample, style: PromptStyle) -> str:
    """The question text of ``sample`` in the paper's prompt for ``style``."""
    question = f"{sample.context}\n{sample.question}" if sample.context else sample.question
    if style == "open":
        return OPEN_ENDED_PROMPT.format(question=question)
    if style == "multiple_choice":
        if not sample.choices:
            raise ValueError(f"sample {sample.id!r} of {sample.task!r} has no choices for a multiple-choice prompt")
        choices = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(sample.choices))
        return MULTIPLE_CHOICE_PROMPT.format(question=question, choices=choices)
    if style == "caption":
        return CAPTION_PROMPT
    if style == "raw":
        return question
    raise ValueError(f"unknown prompt style {style!r}; expected 'open', 'multiple_choice', 'caption' or 'raw'")


def shot_answer(sample: EvalSample) -> str:
    """The answer shown for a support example: the most common reference (first on ties)."""
    if not sample.answers:
        raise ValueError(f"support sample {sample.id!r} has no answer")
    counts = Counter(sample.answers)
    return max(sample.answers, key=lambda answer: counts[answer])


def select_shots(support: Sequence[EvalSample], num_shots: int, seed: int, query: EvalSample) -> list[EvalSample]:
    """``num_shots`` support examples drawn at random for ``query`` (never the query itself).

    The draw depends only on ``seed``, the query's id and the support ids (not their order), so
    it is the same in every run, batch size and process.
    """
    if num_shots == 0:
        return []
    pool = sorted((s for s in support if s.id != query.id), key=lambda s: s.id)  # independent of support order
    if len(pool) < num_shots:
        raise ValueError(
            f"{num_shots}-shot evaluation needs {num_shots} support samples; the support set has {len(pool)}"
        )
    return random.Random(f"vlmkit.shots:{seed}:{query.task}:{query.id}").sample(pool, num_shots)


def build_prompt(
    query: EvalSample, shots: Sequence[EvalSample], style: PromptStyle, chat: bool = True
) -> tuple[list[ImageInput], list[Turn]]:
    """Images and turns for ``query`` preceded by ``shots`` (their images interleaved with their text).

    Args:
        query: The sample to answer.
        shots: Support examples, shown with their answers first.
        style: The prompt of ``format_question``.
        chat: Chat template turns (instruction models) or one plain-text turn (base models).

    Returns:
        The images in order of appearance and the turns; render them with ``add_generation_prompt=chat``.
    """
    images: list[ImageInput] = []
    if chat:
        turns: list[Turn] = []
        for sample in [*shots, query]:
            images.extend(sample.images)
            content = [*({"type": "image"} for _ in sample.images), format_question(sample, style)]
            turns.append(Turn("user", content))
            if sample is not query:
                turns.append(Turn("assistant", [shot_answer(sample)]))
        return images, turns
    content: list = []
    for sample in [*shots, query]:
        images.extend(sample.images)
        content.extend({"type": "image"} for _ in sample.images)
        answer = f" {shot_answer(sample)}\n" if sample is not query else ""
        content.append(f"{format_question(sample, style)}\nAnswer:{answer}")
    return images, [Turn("text", content)]
