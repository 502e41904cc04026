"""Run lmms-eval tasks on a vlmkit model (lmms-eval is optional: ``pip install lmms-eval``).

It sits with the other bridges to outside libraries (:mod:`vlmkit.interop`) because it also loads a ``VLMModule``
checkpoint (training), which evaluation code below training must not import.

lmms-eval (0.3-0.7) hands a model ``Instance``s whose ``args`` are
``(context, gen_kwargs, doc_to_visual, doc_id, task, split)`` for ``generate_until`` and
``(context, continuation_or_fn, doc_to_visual, doc_id, task, split)`` for ``loglikelihood``,
after filling ``model.task_dict[task][split][doc_id]``. The adapter renders each request with
vlmkit's processor (images first, then the context; chat template or plain text) and answers
with ``VisionLanguageModel.generate`` or a scored forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from vlmkit.data.collate import VLMCollator
from vlmkit.data.processor import VLMProcessor
from vlmkit.deprecation import renamed_argument
from vlmkit.eval.generation import decode
from vlmkit.model import VisionLanguageModel
from vlmkit.text.template import Turn
from vlmkit.training.module import VLMModule
from vlmkit.training.safe_loading import allow_optimizer_classes, load_checkpoint


class VlmkitLMMSAdapter:
    """The lmms-eval model interface over a ``VisionLanguageModel`` (see :func:`lmms_eval_model`).

    Args:
        vlm: The model to evaluate.
        max_image_size: Processor cap on the longest side.
        min_image_size: Processor target for the shortest side.
        eval_image_splitting: Give every image as 4 crops + itself.
        chat: Render requests with the chat template (instruction models) or as plain text.
        default_max_new_tokens: Generation budget when a task does not set ``max_new_tokens``.
        image_splitting: Deprecated name of ``eval_image_splitting``.
    """

    def __init__(
        self,
        vlm: VisionLanguageModel,
        max_image_size: int = 980,
        min_image_size: int = 378,
        eval_image_splitting: bool = False,
        chat: bool = True,
        default_max_new_tokens: int = 128,
        image_splitting: bool | None = None,
    ) -> None:
        super().__init__()  # lmms-eval's base class, when mixed in
        self.vlm = vlm.eval()
        self.processor = VLMProcessor.from_model(vlm, max_image_size, min_image_size)
        self.collate = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size, padding_side="left")
        self.eval_image_splitting = renamed_argument(
            "lmms_eval_model", "image_splitting", image_splitting, "eval_image_splitting", eval_image_splitting, False
        )
        self.chat = chat
        self.default_max_new_tokens = default_max_new_tokens
        self.task_dict: dict[str, Any] = {}

    def _images(self, doc_to_visual, doc_id, task: str, split: str) -> list[Image.Image]:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        unsupported = [type(v).__name__ for v in visuals if not isinstance(v, Image.Image)]
        if unsupported:
            raise ValueError(f"task {task!r} doc {doc_id}: only images are supported, got {unsupported}")
        return list(visuals)

    def _prompt(self, images: list[Image.Image], context: str) -> dict[str, Any]:
        content = [*({"type": "image"} for _ in images), context]
        turns = [Turn("user" if self.chat else "text", content)]
        item = self.processor(images, turns, add_generation_prompt=self.chat, split_images=self.eval_image_splitting)
        return self.collate([item])

    @torch.no_grad()
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Answer each request; stops at the task's ``until`` strings and at ``<end_of_utterance>``/EOS."""
        answers = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(gen_kwargs.get("temperature", 0.0) or 0.0)
            batch = self._prompt(self._images(doc_to_visual, doc_id, task, split), context)
            generated = self.vlm.generate(
                batch["input_ids"],
                batch["attention_mask"],
                batch.get("pixel_values"),
                batch.get("patch_mask"),
                max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.default_max_new_tokens)),
                stop_strings=until,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else 1.0,
                top_p=float(gen_kwargs.get("top_p", 1.0) or 1.0),
            )
            answers.append(decode(generated, self.vlm.tokenizer, until)[0])
        return answers

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after its context, and whether greedy decoding produces it."""
        results = []
        for request in requests:
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            if callable(continuation):
                continuation = continuation(self.task_dict[task][split][doc_id])
            batch = self._prompt(self._images(doc_to_visual, doc_id, task, split), context)
            target = torch.tensor([self.vlm.tokenizer.encode(continuation, add_special_tokens=False)])
            if target.numel() == 0:
                results.append((0.0, True))
                continue
            input_ids = torch.cat([batch["input_ids"], target], dim=1)
            attention_mask = torch.cat([batch["attention_mask"], torch.ones_like(target)], dim=1)
            logits = self.vlm(input_ids, attention_mask, batch.get("pixel_values"), batch.get("patch_mask")).logits
            scores = logits[0, -target.shape[1] - 1 : -1].float().log_softmax(-1)  # [len(target), vocab]
            logprob = scores.gather(-1, target[0, :, None]).sum().item()
            results.append((logprob, bool((scores.argmax(-1) == target[0]).all())))
        return results

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        """Multi-round generation is not supported."""
        raise NotImplementedError("vlmkit's lmms-eval adapter does not support multi-round generation")


def lmms_eval_model(vlm: VisionLanguageModel | str, trust_checkpoint: bool = False, **kwargs: Any):
    """An lmms-eval model (a subclass of ``lmms_eval.api.model.lmms``) over ``vlm``.

    Args:
        vlm: A ``VisionLanguageModel``, or the path of a ``VLMModule`` checkpoint trained with ``vlmkit fit``
            (read with ``weights_only=True``; the model is rebuilt from the recipe saved in it).
        trust_checkpoint: Unpickle the checkpoint in full (runs any code it holds), with a warning.
        **kwargs: Options of :class:`VlmkitLMMSAdapter`.

    Example:
        >>> from lmms_eval.evaluator import simple_evaluate  # doctest: +SKIP
        >>> results = simple_evaluate(model=lmms_eval_model("last.ckpt"), tasks=["textvqa_val"])  # doctest: +SKIP

    Raises:
        ImportError: If lmms-eval is not installed.
        CheckpointError: If the checkpoint is missing, empty, truncated or needs full unpickling (without
            ``trust_checkpoint``); the message names the file.
    """
    try:
        from lmms_eval.api.model import lmms
    except ImportError as err:
        raise ImportError("the lmms-eval adapter needs lmms-eval: `pip install lmms-eval`") from err
    if isinstance(vlm, str):
        vlm = _load_vlm(vlm, trust_checkpoint)
    model_class = type("VlmkitLMM", (VlmkitLMMSAdapter, lmms), {})
    return model_class(vlm, **kwargs)


def _load_vlm(path: str, trust: bool) -> VisionLanguageModel:
    """The model of a ``VLMModule`` checkpoint, rebuilt from its saved recipe; the file is read without running code."""
    load_checkpoint(path, trust=trust, opt_in="call lmms_eval_model(..., trust_checkpoint=True)", mmap=True)
    with allow_optimizer_classes(path):  # checked above: loads with weights_only
        return VLMModule.load_from_checkpoint(path, map_location="cpu", weights_only=not trust).vlm
