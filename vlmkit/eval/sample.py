"""The one record every evaluation reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmkit.data.image_processing import ImageInput


@dataclass(frozen=True)
class EvalSample:
    """One evaluation question (or captioning item) with its references.

    Attributes:
        id: The benchmark's own id (question id, image id, index), as a string.
        images: The images in the order they appear (PIL images or file paths).
        question: The question text (empty for captioning). Image references inside the text
            (e.g. MMMU's ``<image 1>``) are kept as the benchmark writes them.
        answers: Reference answers: the 10 human answers (VQA), several captions (COCO), the
            answer strings (DocVQA), or the correct letter (multiple choice).
        choices: Multiple-choice options in order (A, B, C, ...); empty for open-ended questions.
        task: Name of the benchmark or task the sample comes from.
        context: Extra text shown before the question (e.g. MMBench's hint); may be empty.
    """

    id: str
    images: tuple[ImageInput, ...]
    question: str
    answers: tuple[str, ...]
    choices: tuple[str, ...] = ()
    task: str = ""
    context: str = ""
    extra: dict = field(default_factory=dict, compare=False)
