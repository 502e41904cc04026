import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import Metric

from vlmkit.data.synthetic import SyntheticVQADataset
from vlmkit.eval.datamodule import EvaluationDataModule
from vlmkit.eval.sample import EvalSample
from vlmkit.eval.task import EvalTask
from vlmkit.training import VLMModule


def read_synthetic(num_samples: int = 6, seed: int = 5) -> list[EvalSample]:
    data = SyntheticVQADataset(num_samples, seed, ["color", "shape"], 16, 40, 1)
    return [EvalSample(str(i), (s.image,), s.question, (s.answer,), task=s.task) for i, s in enumerate(data)]


class Match(Metric):
    def __init__(self) -> None:
        super().__init__()
        self.add_state("hits", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.seen: list[str] = []

    def update(self, predictions, references) -> None:
        self.seen.extend(predictions)
        self.hits += sum(p in r for p, r in zip(predictions, references))
        self.total += len(predictions)

    def compute(self):
        return self.hits / self.total


class MetricsLog(Logger):
    """Keeps what is logged, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[str, float] = {}

    name, version = "memory", 0

    @property
    def experiment(self):
        return None

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.update(metrics)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def evaluate(tiny_vlm, batch_size: int):
    tasks = [
        EvalTask("synthetic_0shot", read_synthetic, Match(), prompt="raw", max_new_tokens=3),
        EvalTask("synthetic_2shot", read_synthetic, Match(), prompt="open", num_shots=2, max_new_tokens=3),
    ]
    data = EvaluationDataModule(tasks, batch_size=batch_size, max_image_size=40, min_image_size=16)
    module = VLMModule(tiny_vlm, evaluator=data.evaluator)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=data)
    return module, tasks


def test_validate_scores_every_task_and_prints_a_table(tiny_vlm, caplog, monkeypatch):
    # Lightning stops its logger propagating when it is first imported with no root handler (test order decides)
    monkeypatch.setattr(logging.getLogger("lightning.pytorch"), "propagate", True)
    with caplog.at_level(logging.INFO):
        module, tasks = evaluate(tiny_vlm, batch_size=3)
    assert set(module.evaluation_results) == {"synthetic_0shot", "synthetic_2shot"}
    assert all(0.0 <= v <= 1.0 for v in module.evaluation_results.values())
    assert all(len(task.metric.seen) == 6 for task in tasks)  # every sample answered once
    assert "synthetic_2shot  Match" in caplog.text and "shots" in caplog.text


def test_batched_evaluation_equals_batch_size_one(tiny_vlm):
    _, batched = evaluate(tiny_vlm, batch_size=4)
    _, single = evaluate(tiny_vlm, batch_size=1)
    for a, b in zip(batched, single):
        assert a.metric.seen == b.metric.seen


def test_task_arguments_are_checked():
    with pytest.raises(ValueError, match="num_shots"):
        EvalTask("x", read_synthetic, Match(), num_shots=-1)
    with pytest.raises(ValueError, match="unique names"):
        EvaluationDataModule([EvalTask("x", read_synthetic, Match())] * 2)
    with pytest.raises(ValueError, match="returned no samples"):
        EvalTask("empty", read_synthetic, Match(), reader_kwargs={"num_samples": 0}).load()


def test_fit_scores_tasks_beside_the_training_validation(tiny_vlm):
    from tiny_models import build_tiny_vlm

    from vlmkit.data import SyntheticVQADataModule
    from vlmkit.eval.datamodule import TrainWithEvaluation

    small = {"min_size": 16, "max_size": 40, "max_image_size": 40, "min_image_size": 16}
    train = SyntheticVQADataModule(num_train=8, num_val=4, batch_size=4, **small)
    tasks = [EvalTask("synthetic", read_synthetic, Match(), reader_kwargs={"num_samples": 3}, max_new_tokens=2)]
    data = TrainWithEvaluation(train, EvaluationDataModule(tasks, batch_size=3, max_image_size=40, min_image_size=16))
    module = VLMModule(build_tiny_vlm(train_language_model="full"), evaluator=data.evaluator)
    logged = MetricsLog()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        val_check_interval=2,
        logger=logged,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    assert "val/synthetic" in metrics and "val/majority_baseline" in logged.metrics  # the data logs its baseline
    assert any(key.startswith("val/accuracy") for key in metrics)
    assert len(tasks[0].metric.seen) == 3


def test_an_image_that_does_not_decode_names_the_task_sample_and_file(tiny_vlm, tmp_path):
    import io

    from PIL import Image

    from vlmkit.data.processor import VLMProcessor
    from vlmkit.eval.task import PromptDataset

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", exif=b"Exif\x00\x00NOTATIFF" + bytes(16), dpi=(72, 72))
    (tmp_path / "q7.jpg").write_bytes(buffer.getvalue())  # EXIF that is not TIFF data: SyntaxError before

    def reader():
        return [EvalSample("q7", (tmp_path / "q7.jpg",), "What color?", ("black",), task="toy")]

    dataset = PromptDataset(EvalTask("toy", reader, Match()), 0, VLMProcessor.from_model(tiny_vlm, 32, 16))
    with pytest.raises(ValueError, match=r"task 'toy' sample 'q7': cannot read image .*q7.jpg.*not a TIFF file"):
        dataset[0]
