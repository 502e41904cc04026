"""The built-in synthetic tasks as evaluation samples, so benchmark code runs without any download.

Wraps ``vlmkit.data.synthetic.SyntheticVQADataset``: sample ``i`` is generated on the fly from ``(seed, i)``,
so the same arguments always give the same questions and images.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlmkit.data.synthetic import MAX_SHAPES, SyntheticVQADataset
from vlmkit.eval.sample import EvalSample


def load_synthetic(
    num_samples: int,
    seed: int = 0,
    tasks: Sequence[str] = ("color", "shape", "count", "position"),
    min_size: int = 32,
    max_size: int = 96,
    max_shapes: int = MAX_SHAPES,
) -> list[EvalSample]:
    """Generate ``num_samples`` synthetic questions as ``EvalSample``s.

    Args:
        num_samples: Number of samples.
        seed: Dataset seed (use one not seen in training).
        tasks: Task names cycled through round-robin, from ``vlmkit.data.synthetic.TASKS``.
        min_size: Smallest image side in pixels.
        max_size: Largest image side in pixels.
        max_shapes: Most shapes per image.

    Returns:
        One sample per index: ``id`` is the index, ``images`` the generated PIL image, ``answers`` the single
        answer (the caption for ``"caption"``), ``task`` the synthetic task's name; ``extra["caption"]`` is
        the image's caption.

    Raises:
        ValueError: If an argument is invalid (see ``SyntheticVQADataset``).
    """
    dataset = SyntheticVQADataset(num_samples, seed, tasks, min_size, max_size, max_shapes)
    samples = []
    for index in range(len(dataset)):
        sample = dataset[index]
        samples.append(
            EvalSample(
                id=str(index),
                images=(sample.image,),
                question=sample.question,
                answers=(sample.answer,),
                task=sample.task,
                extra={"caption": sample.caption},
            )
        )
    return samples
