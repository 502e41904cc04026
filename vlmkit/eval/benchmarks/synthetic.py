"""The built-in synthetic tasks as evaluation samples, so benchmark code runs without any download.

Wraps ``vlmkit.data.synthetic.SyntheticVQADataset``: sample ``i`` is generated on the fly from ``(seed, i)``,
so the same arguments always give the same questions and images.
"""

from __future__ import annotations

from typing import Any

from vlmkit.data.synthetic import SyntheticVQADataset
from vlmkit.eval.sample import EvalSample


def load_synthetic(num_samples: int, seed: int = 0, **dataset_options: Any) -> list[EvalSample]:
    """Generate ``num_samples`` synthetic questions as ``EvalSample``s.

    Args:
        num_samples: Number of samples.
        seed: Dataset seed (use one not seen in training).
        **dataset_options: The other arguments of :class:`~vlmkit.data.synthetic.SyntheticVQADataset`: ``tasks``
            (cycled through round-robin), ``min_size``, ``max_size``, ``max_shapes``.

    Returns:
        One sample per index: ``id`` is the index, ``images`` the generated PIL image, ``answers`` the single
        answer (the caption for ``"caption"``), ``task`` the synthetic task's name; ``extra["caption"]`` is
        the image's caption.

    Raises:
        ValueError: If an argument is invalid (see ``SyntheticVQADataset``).
    """
    dataset = SyntheticVQADataset(num_samples, seed, **dataset_options)
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
