"""Generation: greedy or sampled decoding with a KV cache, each sequence stopping on its own.

The loop's state stays on the device and the host reads it one step late on CUDA (:mod:`vlmkit.model.decoding`); when
the weights are sharded across processes (FSDP), all ranks decode in lockstep until every rank is done. A model is
anything with the :class:`~vlmkit.model.VisionLanguageModel` forward, ``language_model``, ``fusion``, ``tokenizer`` and
``stop_token_ids``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from vlmkit.model.decoding import (
    HostCopy,
    StopStringWatcher,
    all_ranks,
    check_prompts,
    host_lag,
    next_token,
    sharded_across_ranks,
    stop_string_candidates,
)

if TYPE_CHECKING:
    from vlmkit.model.vision_language_model import VisionLanguageModel


@torch.no_grad()
def generate(
    vlm: VisionLanguageModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    pixel_values: torch.Tensor | None = None,
    patch_mask: torch.Tensor | None = None,
    max_new_tokens: int = 20,
    stop_token_ids: Sequence[int] | None = None,
    stop_strings: Sequence[str] = (),
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    top_k: int = 0,
    streamer: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Greedy (or sampled) decoding with a KV cache; prompts must be left-padded.

    Each sequence stops on its own, at a stop token or once its text contains a stop
    string (e.g. the paper's ``Question`` and ``User``, appendix A.3.1); later positions
    hold the pad id. :func:`vlmkit.eval.generation.decode` cuts the text at the stop string.
    The decode loop keeps its state on the device (on CUDA the host reads it one step late,
    without stalling the device; see :mod:`vlmkit.model.decoding`). When the weights are sharded
    across processes (FSDP), all ranks decode in lockstep until every rank is done: each
    forward all-gathers weights. Results are the same either way.

    Args:
        vlm: The model.
        input_ids: Prompt ids ``[b, s]``, left-padded.
        attention_mask: ``1`` on real prompt tokens ``[b, s]``.
        pixel_values: Images of the prompts ``[n, 3, H, W]``.
        patch_mask: Real patches ``[n, h, w]``.
        max_new_tokens: Upper bound on generated tokens.
        stop_token_ids: Tokens that end a sequence (default: ``<end_of_utterance>`` and EOS);
            kept in the output.
        stop_strings: Texts that end a sequence once generated.
        do_sample: Sample instead of taking the argmax.
        temperature: Softmax temperature when sampling.
        top_p: Nucleus sampling mass when sampling.
        generator: Random generator for reproducible sampling.
        top_k: Sample among the ``top_k`` most likely tokens only; 0: all.
        streamer: Called with each step's tokens ``[b]`` as soon as they are chosen (finished rows hold the pad
            id), e.g. to print an answer while it is generated; it reads the device, so it costs a sync per step.

    Returns:
        Generated ids ``[b, <= max_new_tokens]`` (prompt excluded).

    Raises:
        ValueError: For ``max_new_tokens < 1``, an empty prompt, or prompt rows that are all
            padding or not left-padded (naming the rows).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    attention_mask = check_prompts(input_ids, attention_mask)
    device, batch_size = input_ids.device, input_ids.shape[0]
    stop_ids = stop_token_ids if stop_token_ids is not None else vlm.stop_token_ids
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    pad_id = vlm.tokenizer.pad_token_id
    watcher = None
    if stop_strings:
        watcher = StopStringWatcher(vlm.tokenizer, stop_strings, _stop_candidates(vlm, stop_strings), batch_size)
    lockstep, lag = sharded_across_ranks(vlm), host_lag(device)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [b, s]
    out = vlm(  # the head only at the last position: the next token is all a prefill needs of it
        input_ids, attention_mask, pixel_values, patch_mask, position_ids=position_ids, use_cache=True, logits_to_keep=1
    )
    generated = torch.full((batch_size, max_new_tokens), pad_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    last_step = torch.full((batch_size,), max_new_tokens - 1, dtype=torch.long, device=device)  # row's end
    seen: deque[tuple[int, HostCopy, HostCopy]] = deque()  # (step, tokens, finished) for the watcher
    done_flags: deque[HostCopy] = deque()

    def read_stop_strings(step: int, keep: int) -> None:
        """Let the watcher read all but the ``keep`` latest steps; rows that hit a stop string end there."""
        while len(seen) > keep:
            hit_step, ids, hit_finished = seen.popleft()
            rows = watcher.update(ids.get(), hit_finished.get())
            if rows:  # tokens generated before the host saw the hit become padding
                finished[rows] = True
                last_step[rows] = hit_step
                generated[rows, hit_step + 1 : step + 1] = pad_id

    for step in range(max_new_tokens):
        next_ids = next_token(out.logits[:, -1], do_sample, temperature, top_p, generator, top_k)  # [b]
        next_ids = torch.where(finished, torch.full_like(next_ids, pad_id), next_ids)
        generated[:, step] = next_ids
        if streamer is not None:
            streamer(next_ids)
        stopped = torch.isin(next_ids, stops) & ~finished  # [b]
        last_step = torch.where(stopped, step, last_step)
        finished |= stopped
        if step == max_new_tokens - 1:
            break
        if watcher is not None:
            seen.append((step, HostCopy(next_ids), HostCopy(finished)))
            read_stop_strings(step, keep=lag)
        all_done = finished.all()
        done_flags.append(HostCopy(all_ranks(all_done) if lockstep else all_done))
        if len(done_flags) > lag and bool(done_flags.popleft().get()):
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        position_ids = position_ids[:, -1:] + 1  # [b, 1]
        embeds = vlm.language_model.get_input_embeddings()(next_ids[:, None])  # [b, 1, d]
        out = vlm.fusion(
            vlm.language_model,
            embeds,
            torch.zeros_like(next_ids[:, None], dtype=torch.bool),
            None,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=out.cache,
            use_cache=True,
        )
    if watcher is not None:
        read_stop_strings(step, keep=0)
    return generated[:, : int(last_step.max()) + 1]  # up to the step the last row ended: one host sync


def _stop_candidates(vlm: VisionLanguageModel, stop_strings: Sequence[str]) -> torch.Tensor:
    """:func:`~vlmkit.model.decoding.stop_string_candidates` of the tokenizer, cached on ``vlm`` per stop strings."""
    cache = vlm.__dict__.setdefault("_stop_candidates_cache", {})
    key = tuple(stop_strings)
    if key not in cache:
        cache[key] = stop_string_candidates(vlm.tokenizer, key)
    return cache[key]
