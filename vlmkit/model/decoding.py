"""The pieces of ``VisionLanguageModel.generate``'s decode loop that are not the model.

Design: the loop's state (tokens, finished rows, the step each row finished) stays on the device; the
host reads it only to stop early and to find stop strings. On CUDA it reads step ``t - 1`` while the
device computes step ``t`` (:class:`HostCopy`, no stall of the device); on CPU it reads immediately
(a read is free there). Stop strings are searched only in the rows whose new token could complete one
(:func:`stop_string_candidates`). When the weights are sharded across processes (FSDP), every forward
is a collective, so all ranks decode in lockstep until every rank is done (:func:`sharded_across_ranks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn


def check_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The attention mask of valid left-padded prompts (ones when ``None``).

    Raises:
        ValueError: For a batch without prompt tokens, a mask of another shape, rows that are all
            padding or rows that are not left-padded (each naming the rows).
    """
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(
            f"generate needs prompts of shape [batch, length] with at least one row and one token, "
            f"got input_ids of shape {tuple(input_ids.shape)}"
        )
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids {tuple(input_ids.shape)}"
        )
    empty = attention_mask.sum(-1) == 0  # [b]
    right_padded = (attention_mask[:, -1] == 0) & ~empty  # [b]
    if bool((empty | right_padded).any()):  # one host sync per call
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(
                f"prompt rows {rows} are all padding (attention_mask is 0 everywhere): nothing to continue"
            )
        rows = right_padded.nonzero().flatten().tolist()
        raise ValueError(
            f"prompt rows {rows} are not left-padded (attention_mask[:, -1] is 0): generate needs left-padded "
            "prompts, e.g. VLMCollator(padding_side='left')"
        )
    return attention_mask


def next_token(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    top_k: int = 0,
) -> torch.Tensor:
    """Argmax, or a sample from the temperature-scaled, top-k and nucleus-truncated distribution ``[b]``."""
    if not do_sample:
        return logits.argmax(-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0: no top-k cut), got {top_k}")
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # [b, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [b, vocab]
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sharded_across_ranks(module: nn.Module) -> bool:
    """Whether ``module``'s weights are sharded across processes (FSDP2 ``DTensor`` parameters, or FSDP1).

    Then every forward all-gathers weights, and all ranks must run the same number of forwards.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return False
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in module.parameters()):
        return True
    return any(isinstance(m, FullyShardedDataParallel) for m in module.modules())


def all_ranks(flag: torch.Tensor) -> torch.Tensor:
    """``flag`` (0-d bool) and-ed over all ranks, without a host sync (``[]`` bool)."""
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value.bool()


def host_lag(device: torch.device) -> int:
    """Steps the host reads behind the device: 1 on CUDA (never stall it), 0 elsewhere (reads are free)."""
    return 1 if device.type == "cuda" else 0


class HostCopy:
    """A device tensor on its way to the host; :meth:`get` waits for this copy only, not for later work."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.event = None
        if tensor.device.type == "cuda":
            self.value = tensor.detach().to("cpu", non_blocking=True)  # pinned destination
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.value = tensor.detach().to("cpu", copy=True)

    def get(self) -> torch.Tensor:
        """The host tensor, once copied."""
        if self.event is not None:
            self.event.synchronize()
        return self.value


def stop_string_candidates(tokenizer, stop_strings: Sequence[str]) -> torch.Tensor:
    """``[vocab]`` bool: tokens whose text could complete one of ``stop_strings``.

    A stop string first appears in a row's text at the step whose token adds its last character, so
    only tokens whose decoded text holds the last character of a stop string, or a partial UTF-8
    character (byte tokens, decoded as U+FFFD), need the row's text searched.

    An empty stop string is in every text: then every token is a candidate.
    """
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    if any(not s for s in stop_strings):
        return torch.ones(len(pieces), dtype=torch.bool)
    last_chars = {s[-1] for s in stop_strings}
    return torch.tensor([("\ufffd" in p) or any(c in p for c in last_chars) for p in pieces], dtype=torch.bool)


class StopStringWatcher:
    """Finds, on the host, the step at which each row's generated text first contains a stop string.

    Args:
        tokenizer: Decodes the rows (special tokens skipped, as :func:`vlmkit.eval.generation.decode`).
        stop_strings: The texts that end a row.
        candidates: :func:`stop_string_candidates` of ``tokenizer`` and ``stop_strings``.
        batch_size: Rows.
    """

    def __init__(self, tokenizer, stop_strings: Sequence[str], candidates: torch.Tensor, batch_size: int) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = tuple(stop_strings)
        self.candidates = candidates.tolist()
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.stopped: set[int] = set()

    def update(self, ids: torch.Tensor, finished: torch.Tensor) -> list[int]:
        """Take one step's tokens ``[b]`` and finished rows ``[b]`` (host); return the rows that hit a stop string."""
        hits = []
        for row, (token, done) in enumerate(zip(ids.tolist(), finished.tolist())):
            if done or row in self.stopped:
                continue
            self.tokens[row].append(token)
            if token < len(self.candidates) and not self.candidates[token]:
                continue
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
            if any(stop in text for stop in self.stop_strings):
                self.stopped.add(row)
                hits.append(row)
        return hits
