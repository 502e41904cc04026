"""Evaluation by generation (paper appendix A.3): tasks, prompts, few-shot composition, metrics, benchmark readers.

A :class:`GenerationEvaluator` scores the prompt batches an :class:`EvaluationDataModule` serves (``VLMModule(
evaluator=data.evaluator)``; ``vlmkit`` wires the two itself). Teacher-forced validation loss and accuracy are the
training system's own (:mod:`vlmkit.training`).
"""

from vlmkit.eval.datamodule import EvaluationDataModule, TrainWithEvaluation
from vlmkit.eval.evaluator import GenerationEvaluator
from vlmkit.eval.sample import EvalSample
from vlmkit.eval.task import EvalTask

__all__ = ["EvalSample", "EvalTask", "EvaluationDataModule", "GenerationEvaluator", "TrainWithEvaluation"]
