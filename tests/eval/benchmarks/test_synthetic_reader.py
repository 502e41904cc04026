from PIL import Image

from vlmkit.data.synthetic import SyntheticVQADataset
from vlmkit.eval.benchmarks import load_synthetic


def test_wraps_the_synthetic_dataset():
    tasks = ("count", "reading", "caption")
    samples = load_synthetic(6, seed=3, tasks=tasks)
    dataset = SyntheticVQADataset(6, seed=3, tasks=tasks)
    assert [s.id for s in samples] == [str(i) for i in range(6)]
    for sample, source in zip(samples, (dataset[i] for i in range(6))):
        assert sample.task == source.task and sample.question == source.question
        assert sample.answers == (source.answer,) and sample.choices == ()
        assert len(sample.images) == 1 and isinstance(sample.images[0], Image.Image)
        assert sample.images[0].tobytes() == source.image.tobytes()
        assert sample.extra["caption"] == source.caption
    assert [s.task for s in samples] == list(tasks) * 2
