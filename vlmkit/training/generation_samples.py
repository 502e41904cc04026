"""``GenerationSamples``: at each validation of ``fit``, a few questions answered by generation, with their images.

Teacher-forced accuracy says how often the answer is right; reading a few answers says how it is wrong. The
first validation batch's first rows are cut before their answer, left-padded and answered greedily, and the table
(prompt, generated answer, reference) and the rows' first images go to TensorBoard (``samples/generations``,
``samples/image_<i>``), as the evaluation recipes log their examples (:class:`~vlmkit.eval.GenerationEvaluator`).
Rows that are packed, carry no answer, or show an image after their first answer are left out.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from vlmkit.eval.generation import answer
from vlmkit.text.template import IGNORE_INDEX

PACKING_KEYS = ("position_ids", "segment_ids", "cu_seqlens")


def image_runs(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """``[b]``: images per row, counted as runs of the image token (one run per image, any fusion)."""
    is_image = input_ids == image_token_id  # [b, s]
    starts = is_image & ~torch.nn.functional.pad(is_image, (1, 0))[:, :-1]
    return starts.sum(dim=1)


def generation_prompts(batch: dict[str, Any], image_token_id: int, pad_token_id: int, rows: int) -> dict | None:
    """The first ``rows`` usable rows of a right-padded training batch as a left-padded prompt batch.

    Returns:
        ``input_ids``, ``attention_mask`` (``[k, s]``), their images (``pixel_values``, ``patch_mask``) and
        ``references`` (the answer tokens' ids), or ``None`` when no row is usable (packed rows, no labels).
    """
    if "labels" not in batch or any(key in batch for key in PACKING_KEYS):
        return None
    input_ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
    runs = image_runs(input_ids, image_token_id)  # [b]
    offsets = torch.cumsum(runs, 0) - runs  # [b]: index of each row's first image
    prompts, answers, images = [], [], []
    for i in range(input_ids.shape[0]):
        ids, row_labels = input_ids[i][mask[i]], labels[i][mask[i]]
        answer_at = (row_labels != IGNORE_INDEX).nonzero()
        if len(answer_at) == 0:
            continue
        first = int(answer_at[0])
        prompt = ids[:first]
        if image_runs(prompt[None], image_token_id)[0] != runs[i]:  # an image after the first answer
            continue
        stops = (row_labels[first:] == IGNORE_INDEX).nonzero()
        end = first + int(stops[0]) if len(stops) else len(row_labels)
        prompts.append(prompt)
        answers.append(row_labels[first:end])
        images.append(range(int(offsets[i]), int(offsets[i] + runs[i])))
        if len(prompts) == rows:
            break
    if not prompts:
        return None
    length = max(len(p) for p in prompts)
    out_ids = torch.full((len(prompts), length), pad_token_id, dtype=input_ids.dtype, device=input_ids.device)
    out_mask = torch.zeros_like(out_ids)
    for i, prompt in enumerate(prompts):
        out_ids[i, length - len(prompt) :] = prompt
        out_mask[i, length - len(prompt) :] = 1
    prompt_batch = {"input_ids": out_ids, "attention_mask": out_mask, "references": answers, "images": images}
    index = [j for r in images for j in r]
    if index and "pixel_values" in batch:
        select = torch.tensor(index, device=batch["pixel_values"].device)
        prompt_batch["pixel_values"] = batch["pixel_values"].index_select(0, select)
        prompt_batch["patch_mask"] = batch["patch_mask"].index_select(0, select)
    return prompt_batch


class GenerationSamples(Callback):
    """Log a few generated answers with their images at each validation of ``fit``.

    Args:
        num_samples: Rows of the first validation batch to answer.
        max_new_tokens: Upper bound on generated tokens; default: the module's ``max_new_tokens``.
    """

    def __init__(self, num_samples: int = 4, max_new_tokens: int | None = None) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens
        self.last_table: str | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """On the first batch of the first validation loader during ``fit``: generate, then log (rank 0)."""
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        evaluator = getattr(pl_module, "evaluator", None)
        if evaluator is not None and evaluator.owns(batch):
            return  # the evaluator logs its own examples
        vlm = pl_module.vlm
        tokenizer = vlm.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        prompts = generation_prompts(batch, vlm.image_token_id, pad, self.num_samples)
        if prompts is None:
            return
        predictions = answer(vlm, prompts, self.max_new_tokens or getattr(pl_module, "max_new_tokens", 16))
        questions = tokenizer.batch_decode(prompts["input_ids"], skip_special_tokens=True)
        references = tokenizer.batch_decode(prompts["references"], skip_special_tokens=True)
        rows = [
            f"| {_cell(q[-120:])} | {_cell(p)} | {_cell(r)} |" for q, p, r in zip(questions, predictions, references)
        ]
        self.last_table = "| prompt (end) | generated | reference |\n|---|---|---|\n" + "\n".join(rows)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if not hasattr(experiment, "add_text"):
                continue
            experiment.add_text("samples/generations", self.last_table, trainer.global_step)
            for i, indices in enumerate(prompts["images"]):
                if len(indices) and "pixel_values" in prompts:
                    position = sum(len(r) for r in prompts["images"][:i])
                    image = prompts["pixel_values"][position].float()
                    image = (image - image.min()) / (image.max() - image.min() + 1e-6)
                    experiment.add_image(f"samples/image_{i}", image, trainer.global_step)


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "/").split())
