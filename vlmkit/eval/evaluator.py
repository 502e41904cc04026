"""``GenerationEvaluator``: evaluation by generation, the paper's way of scoring a model (appendix A.3).

A ``VLMModule`` given an evaluator hands it the validation and test batches the evaluator owns -- the left-padded
prompt batches of its tasks (:class:`~vlmkit.eval.task.PromptDataset`, marked with their ``task_index``) -- and scores
every other batch itself, by teacher forcing. The evaluator answers its prompts with greedy generation (the paper's
stop words), feeds each task's metric, logs a few examples, and at the end of the epoch logs every score and prints
one table. It reads nothing from the trainer's data module: :class:`~vlmkit.eval.datamodule.EvaluationDataModule`
serves the prompts and exposes the evaluator of the same tasks (``vlmkit`` wires the two, see ``vlmkit.cli``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_info

from vlmkit.eval.generation import answer
from vlmkit.eval.task import EvalTask

if TYPE_CHECKING:
    import lightning as L

__all__ = ["GenerationEvaluator"]


class GenerationEvaluator:
    """Score a model on ``tasks`` by generating answers to their prompts.

    Args:
        tasks: The evaluations, in the order of their dataloaders (each prompt batch names its ``task_index``).

    Attributes:
        results: The scores of the last completed epoch, by task name.
    """

    def __init__(self, tasks: Sequence[EvalTask]) -> None:
        names = [task.name for task in tasks]
        if not tasks or len(set(names)) != len(names):
            raise ValueError(f"tasks must be a non-empty list with unique names, got {names}")
        self.tasks = list(tasks)
        self.results: dict[str, float] = {}

    def owns(self, batch: dict[str, Any]) -> bool:
        """Whether ``batch`` is a prompt batch of one of the tasks (``PromptDataset`` gives rows a ``task_index``)."""
        indices = batch.get("task_index")
        return bool(indices) and 0 <= indices[0] < len(self.tasks)

    def evaluation_step(self, module: L.LightningModule, batch: dict[str, Any], batch_idx: int) -> None:
        """Answer a prompt batch with ``module.vlm`` and update its task's metric (padding rows left out).

        Every rank generates, also for padding rows: under FSDP the forwards are collectives that run in lockstep.
        """
        task = self.tasks[batch["task_index"][0]]
        predictions = answer(module.vlm, batch, task.max_new_tokens)
        keep = [i for i, pad in enumerate(batch.get("padding") or [False] * len(predictions)) if not pad]
        if keep:
            task.update(
                [predictions[i] for i in keep],
                [batch["references"][i] for i in keep],
                [batch["choices"][i] for i in keep],
            )
        if batch_idx == 0:
            self._log_examples(module, task.name, batch, predictions)

    def on_epoch_end(self, module: L.LightningModule, stage: str) -> None:
        """Log ``<stage>/<task>`` for every task, print the results table, reset the metrics (not in sanity checks)."""
        trainer = module.trainer
        if trainer is not None and trainer.sanity_checking:
            for task in self.tasks:
                task.metric.reset()
            return
        rows = []
        for task in self.tasks:
            value = float(task.metric.compute())
            task.metric.reset()
            module.log(f"{stage}/{task.name}", value, sync_dist=False)
            rows.append((task.name, type(task.metric).__name__, task.num_shots, value))
        self.results = {name: value for name, _, _, value in rows}
        rank_zero_info(results_table(rows))

    def _log_examples(
        self, module: L.LightningModule, name: str, batch: dict[str, Any], predictions: list[str]
    ) -> None:
        """A few generations (and the first image) in TensorBoard, where a person can look at them."""
        experiment = getattr(module.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_text") or module.trainer.sanity_checking:
            return
        rows = [
            f"| {q} | {p} | {' / '.join(r[:3])} |"
            for q, p, r in zip(batch["question"], predictions, batch["references"])
        ][:4]
        table = "| question | prediction | references |\n|---|---|---|\n" + "\n".join(rows)
        experiment.add_text(f"examples/{name}", table, module.global_step)
        if "pixel_values" in batch:
            image = batch["pixel_values"][-1].float()
            image = (image - image.min()) / (image.max() - image.min() + 1e-6)
            experiment.add_image(f"examples/{name}", image, module.global_step)


def results_table(rows: Sequence[tuple[str, str, int, float]]) -> str:
    """``task  metric  shots  score`` rows as the text table ``vlmkit validate`` prints."""
    width = max(len(name) for name, *_ in rows)
    lines = [f"{'task':<{width}}  {'metric':<24} shots   score", "-" * (width + 42)]
    lines += [f"{name:<{width}}  {metric:<24} {shots:>5}  {value:7.4f}" for name, metric, shots, value in rows]
    return "\n".join(lines)
