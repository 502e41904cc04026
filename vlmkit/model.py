"""``VisionLanguageModel``: vision encoder -> connector -> fusion -> language model.

The four parts are injected; the model only wires them and checks that they agree
(widths, and image placeholders versus visual tokens). The connector is given as a
factory ``(in_dim, out_dim) -> Connector`` so its widths follow the encoder and the
LM; swapping it from YAML or the command line needs no dimension bookkeeping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vlmkit.checks import check_equal, host_reads_are_free
from vlmkit.data.token_budget import TokenBudget, token_budget
from vlmkit.decoding import (
    HostCopy,
    StopStringWatcher,
    all_ranks,
    check_prompts,
    host_lag,
    next_token,
    sharded_across_ranks,
    stop_string_candidates,
)
from vlmkit.fusion.autoregressive import FullyAutoregressiveFusion
from vlmkit.interfaces import GridConnector
from vlmkit.llm.transformers_lm import output_cache
from vlmkit.text.tokenizer import END_OF_UTTERANCE_TOKEN, IMAGE_TOKEN, VLM_SPECIAL_TOKENS
from vlmkit.trainability import Trainability, apply_activation_checkpointing, apply_trainability

ConnectorFactory = Callable[[int, int], nn.Module]
"""Builds a connector from ``(in_dim, out_dim)``; in YAML, a ``class_path`` plus ``init_args`` without the dims."""


class VisionLanguageModel(nn.Module):
    """A VLM composed of swappable parts (Idefics2 paper, Figure 2).

    Args:
        vision_encoder: Images ``[n, 3, H, W]`` -> patch features ``[n, p, d_vision]``
            (a :class:`~vlmkit.interfaces.VisionEncoder`).
        connector: Factory called as ``connector(d_vision, d_llm)``, or a built
            :class:`~vlmkit.interfaces.Connector`.
        language_model: A causal LM that owns its tokenizer (a :class:`~vlmkit.interfaces.LanguageModel`).
        fusion: How visual tokens enter the LM (a :class:`~vlmkit.interfaces.Fusion`);
            fully autoregressive by default.
        train_vision_encoder: ``"frozen"``, ``"full"``, ``"lora"``, ``"dora"`` or a
            :class:`~vlmkit.adapters.LoRA` (paper Finding 3: LoRA on the backbones).
        train_language_model: Same choices. Unless ``"full"``, the rows of the added
            special tokens (``<fake_token_around_image>``, ``<image>``, ``<end_of_utterance>``)
            in the input and output embeddings still train: they are new parameters.
        train_fusion: Same choices for the fusion's own blocks (cross-attention); new
            blocks train fully by default. The connector is new and always trains.
        neftune_alpha: NEFTune (Jain et al. 2023; paper section 4.2): in training, add
            uniform noise of scale ``alpha / sqrt(L * d)`` to the text embeddings
            (``L`` = the sample's real length); 0 disables it. Eval is never noised.
        gradient_checkpointing: Recompute the activations of every repeated block
            (:meth:`block_classes`) in the backward pass instead of storing them.
        chat_template: The Jinja chat template of the model's text format, when it comes from a checkpoint
            (``import_idefics2`` passes the checkpoint's): processors then render conversations exactly as
            transformers' processor does with it. ``None``: vlmkit's own layout (:class:`~vlmkit.text.ChatTemplate`).
        stop_token_ids: Tokens that end generation by default; ``None``: ``<end_of_utterance>`` and the
            tokenizer's EOS (``import_idefics2`` passes the checkpoint's ``generation_config`` EOS list plus
            ``<end_of_utterance>``).
        tile_size: Split images Idefics3's way (resolution-dependent grid of ``tile_size`` tiles plus the whole
            image, crops marked ``<row_i_col_j>``/``<global-img>``; see :mod:`vlmkit.data.tiling`): processors built
            from the model (``VLMProcessor.from_model``, the data modules) tile with it. A multiple of the encoder's
            patch size, normally its native resolution. ``None``: the paper's split, 4 crops + the image.

    Example:
        >>> connector = functools.partial(PerceiverResampler, num_latents=64)
        >>> vlm = VisionLanguageModel(encoder, connector, lm)  # doctest: +SKIP
        >>> out = vlm(input_ids, attention_mask, pixel_values, patch_mask)  # doctest: +SKIP
    """

    def __init__(
        self,
        vision_encoder: nn.Module,
        connector: ConnectorFactory,
        language_model: nn.Module,
        fusion: nn.Module | None = None,
        train_vision_encoder: Trainability = "frozen",
        train_language_model: Trainability = "frozen",
        train_fusion: Trainability = "full",
        neftune_alpha: float = 0.0,
        gradient_checkpointing: bool = False,
        chat_template: str | None = None,
        stop_token_ids: Sequence[int] | None = None,
        tile_size: int | None = None,
    ) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.language_model = language_model
        d_vision, d_llm = vision_encoder.hidden_size, language_model.hidden_size
        self.connector = connector if isinstance(connector, nn.Module) else connector(d_vision, d_llm)
        if self.connector.in_dim != d_vision:
            raise ValueError(f"connector in_dim={self.connector.in_dim} != vision encoder hidden_size={d_vision}")
        self._grid_connector = isinstance(self.connector, GridConnector)  # tokens depend on the grid's shape
        if tile_size is not None and (tile_size <= 0 or tile_size % vision_encoder.patch_size):
            raise ValueError(
                f"tile_size={tile_size} must be a positive multiple of the vision encoder's patch_size="
                f"{vision_encoder.patch_size}"
            )
        self.tile_size = tile_size
        self.fusion = fusion if fusion is not None else FullyAutoregressiveFusion()
        self.fusion.bind(language_model, self.connector.out_dim)
        if neftune_alpha < 0:
            raise ValueError(f"neftune_alpha must be >= 0, got {neftune_alpha}")
        self.neftune_alpha = neftune_alpha
        tokenizer = language_model.tokenizer
        apply_trainability(self.vision_encoder, train_vision_encoder, "train_vision_encoder")
        apply_trainability(
            self.language_model,
            train_language_model,
            "train_language_model",
            trainable_tokens=_new_token_rows(language_model, tokenizer.convert_tokens_to_ids(list(VLM_SPECIAL_TOKENS))),
        )
        apply_trainability(self.fusion, train_fusion, "train_fusion")
        self._block_classes = self.block_classes()  # before checkpoint wrappers hide the layer types
        if gradient_checkpointing:
            apply_activation_checkpointing(self, self._block_classes)
        self.image_token_id: int = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.chat_template = chat_template
        if stop_token_ids is None:
            stop_token_ids = (tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN), tokenizer.eos_token_id)
        self.stop_token_ids: tuple[int, ...] = tuple(dict.fromkeys(t for t in stop_token_ids if t is not None))
        self._token_tables: dict[tuple[int, int, str], torch.Tensor] = {}  # see _check_placeholders

    @property
    def tokenizer(self):
        """The language model's tokenizer, with the image tokens."""
        return self.language_model.tokenizer

    def block_classes(self) -> tuple[type[nn.Module], ...]:
        """The repeated block classes of all parts (vision layers, connector layers, fusion blocks, decoder layers).

        Sharding (FSDP) and activation-checkpointing policies are derived from these, never hard-coded per model.
        """
        if getattr(self, "_block_classes", None) is not None:
            return self._block_classes
        classes: list[type[nn.Module]] = []
        for part in (self.vision_encoder, self.connector, self.fusion, self.language_model):
            block = getattr(part, "block_class", None)
            if isinstance(block, type) and block not in classes:
                classes.append(block)
        return tuple(classes)

    def num_image_tokens(self, height: int, width: int) -> int:
        """Placeholder tokens the text must hold for one ``height x width`` image."""
        patch = self.vision_encoder.patch_size
        return self._tokens_for_grid(height // patch, width // patch)

    def token_budget(
        self, height: int, width: int, max_image_size: int = 980, min_image_size: int = 378, split: bool = False
    ) -> TokenBudget:
        """Encoder patches and visual tokens a ``height x width`` image costs this model (see ``token_budget``).

        With ``tile_size`` a split image is tiled (Idefics3's grid) and ``max_image_size`` is the longest side
        images are resized to before tiling.
        """
        return token_budget(
            height,
            width,
            self.vision_encoder.patch_size,
            max_image_size=max_image_size,
            min_image_size=min_image_size,
            split=split,
            tile_size=self.tile_size,
            tokens_for_grid=self._tokens_for_grid,
        )

    def encode_images(
        self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images ``[n, 3, H, W]`` -> visual tokens ``[n, v, d_llm]`` and their real-token mask ``[n, v]``.

        The encoder sees the padded 2-D grid; before the connector each image's real patches are moved to
        the front of its sequence (row-major order kept), so a connector sees exactly the sequence the
        image gives alone, followed by padding.
        """
        features = self.vision_encoder(pixel_values, patch_mask)  # [n, p, d_vision]
        mask = None
        if self._grid_connector:  # the padded 2-D grid: the connector's tokens depend on each image's rows and cols
            mask = patch_mask if patch_mask is not None else _full_grid_mask(pixel_values, self.vision_encoder)
        elif patch_mask is not None:
            features, mask = _pack_real_patches(features, patch_mask.flatten(1))  # [n, p, d_vision], [n, p]
        features = features.to(_weight_dtype(self.connector, features.dtype))  # frozen bf16 encoder, fp32 connector
        visual_tokens = self.connector(features, mask)  # [n, v, d_llm]
        return visual_tokens, self.connector.output_mask(mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        patch_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        segment_ids: torch.Tensor | None = None,
    ):
        """Logits for interleaved text and images.

        Args:
            input_ids: Token ids ``[b, s]`` with image placeholders.
            attention_mask: ``1`` on real tokens ``[b, s]``.
            pixel_values: All images of the batch in text order ``[n, 3, H, W]``.
            patch_mask: ``True`` on real patches ``[n, H/patch, W/patch]`` (padded batches).
            position_ids: Positions ``[b, s]`` (needed with left padding).
            cache: KV cache from a previous call.
            use_cache: Return the KV cache.
            segment_ids: Packed rows: sample index of every token ``[b, s]`` (padding ``-1``), with
                ``position_ids`` restarting per sample; attention stays within each sample
                (see ``vlmkit.data.sequence_packing``). Fully autoregressive fusion only.

        Returns:
            The LM's ``CausalLMOutputWithPast`` (``logits [b, s, vocab]``).

        Raises:
            ValueError: If placeholders and visual tokens disagree in number (both counts named), or
                ``segment_ids`` come with another fusion or without ``position_ids``.
        """
        image_token_mask = input_ids == self.image_token_id  # [b, s]
        self._check_placeholders(image_token_mask, pixel_values, patch_mask)
        inputs_embeds = self.language_model.get_input_embeddings()(input_ids)  # [b, s, d_llm]
        if self.training and self.neftune_alpha > 0:
            inputs_embeds = neftune(inputs_embeds, _sample_lengths(attention_mask, segment_ids), self.neftune_alpha)
        packing = {}
        if segment_ids is not None:
            self._check_packing(position_ids)
            packing = {"segment_ids": segment_ids}  # the LM isolates the samples the way its attention takes it
        visual_tokens, visual_mask = None, None
        if pixel_values is not None and pixel_values.shape[0] > 0:
            visual_tokens, visual_mask = self.encode_images(pixel_values, patch_mask)  # [n, v, d_llm]
        return self.fusion(
            self.language_model,
            inputs_embeds,
            image_token_mask,
            visual_tokens,
            visual_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **packing,
        )

    def _check_packing(self, position_ids: torch.Tensor | None) -> None:
        """Packed rows need the fully autoregressive fusion and per-sample ``position_ids``."""
        if not isinstance(self.fusion, FullyAutoregressiveFusion):
            raise ValueError(
                f"packed sequences (segment_ids) need FullyAutoregressiveFusion, not {type(self.fusion).__name__}"
            )
        if position_ids is None:
            raise ValueError("packed sequences need position_ids restarting at 0 for every sample")

    def _check_placeholders(
        self, image_token_mask: torch.Tensor, pixel_values: torch.Tensor | None, patch_mask: torch.Tensor | None
    ) -> None:
        """Fail fast, before any compute, when placeholders and images disagree.

        On CPU a ``ValueError`` names both counts; on an accelerator the check is a device-side assertion, so the
        forward pass never waits for the device (see :mod:`vlmkit.checks`).
        """
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        expected: torch.Tensor | int = 0
        if num_images:
            _, _, h, w = pixel_values.shape
            patch = self.vision_encoder.patch_size
            if patch_mask is None:
                expected = num_images * self._tokens_for_grid(h // patch, w // patch)
            else:
                real_rows, real_cols = patch_mask.any(2).sum(1), patch_mask.any(1).sum(1)  # [n], [n]
                if host_reads_are_free(patch_mask):
                    grids = zip(real_rows.tolist(), real_cols.tolist())
                    expected = sum(self._tokens_for_grid(rows, cols) for rows, cols in grids)
                else:  # the per-image grids stay on the device: look their token counts up there
                    table = self._token_table(patch_mask.shape[1], patch_mask.shape[2], patch_mask.device)
                    expected = table[real_rows, real_cols].sum()
        check_equal(
            image_token_mask.sum(),
            expected,
            lambda found, needed: (
                f"the text holds {found} image placeholder tokens but the "
                f"{num_images} images need {needed} visual tokens"
            ),
        )

    def _tokens_for_grid(self, rows: int, cols: int) -> int:
        """Placeholder tokens for one image whose real patches form a ``rows x cols`` grid."""
        if self._grid_connector:
            visual = self.connector.num_grid_tokens(rows, cols)
        else:
            visual = self.connector.num_visual_tokens(rows * cols)
        return self.fusion.tokens_per_image(visual)

    def _token_table(self, max_rows: int, max_cols: int, device: torch.device) -> torch.Tensor:
        """``[max_rows + 1, max_cols + 1]`` placeholder tokens per real grid, on ``device`` (cached per size)."""
        key = (max_rows, max_cols, str(device))
        if key not in self._token_tables:
            counts = []
            for rows in range(max_rows + 1):
                for cols in range(max_cols + 1):
                    try:
                        counts.append(self._tokens_for_grid(rows, cols))
                    except ValueError:  # more patches than the connector takes: never matches
                        counts.append(-(2**40))
            table = torch.tensor(counts).reshape(max_rows + 1, max_cols + 1)
            if device.type == "cuda":
                table = table.pin_memory()  # so the copy below does not wait for the device
            self._token_tables[key] = table.to(device, non_blocking=True)
        return self._token_tables[key]

    @torch.no_grad()
    def generate(
        self,
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
    ) -> torch.Tensor:
        """Greedy (or sampled) decoding with a KV cache; prompts must be left-padded.

        Each sequence stops on its own, at a stop token or once its text contains a stop
        string (e.g. the paper's ``Question`` and ``User``, appendix A.3.1); later positions
        hold the pad id. :func:`vlmkit.eval.generation.decode` cuts the text at the stop string.
        The decode loop keeps its state on the device (on CUDA the host reads it one step late,
        without stalling the device; see :mod:`vlmkit.decoding`). When the weights are sharded
        across processes (FSDP), all ranks decode in lockstep until every rank is done: each
        forward all-gathers weights. Results are the same either way.

        Args:
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
        stop_ids = stop_token_ids if stop_token_ids is not None else self.stop_token_ids
        stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        pad_id = self.tokenizer.pad_token_id
        watcher = None
        if stop_strings:
            watcher = StopStringWatcher(self.tokenizer, stop_strings, self._stop_candidates(stop_strings), batch_size)
        lockstep, lag = sharded_across_ranks(self), host_lag(device)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [b, s]
        out = self(input_ids, attention_mask, pixel_values, patch_mask, position_ids=position_ids, use_cache=True)
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
            next_ids = next_token(out.logits[:, -1], do_sample, temperature, top_p, generator)  # [b]
            next_ids = torch.where(finished, torch.full_like(next_ids, pad_id), next_ids)
            generated[:, step] = next_ids
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
            embeds = self.language_model.get_input_embeddings()(next_ids[:, None])  # [b, 1, d]
            out = self.fusion(
                self.language_model,
                embeds,
                torch.zeros_like(next_ids[:, None], dtype=torch.bool),
                None,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=output_cache(out),
                use_cache=True,
            )
        if watcher is not None:
            read_stop_strings(step, keep=0)
        return generated[:, : int(last_step.max()) + 1]  # up to the step the last row ended: one host sync

    def _stop_candidates(self, stop_strings: Sequence[str]) -> torch.Tensor:
        """:func:`~vlmkit.decoding.stop_string_candidates` of the tokenizer, cached per set of stop strings."""
        cache = self.__dict__.setdefault("_stop_candidates_cache", {})
        key = tuple(stop_strings)
        if key not in cache:
            cache[key] = stop_string_candidates(self.tokenizer, key)
        return cache[key]


def neftune(embeds: torch.Tensor, lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """NEFTune: ``embeds + U(-1, 1) * alpha / sqrt(L * d)`` ``[b, s, d]``.

    Args:
        embeds: Token embeddings ``[b, s, d]``.
        lengths: ``L``, the real length of the sample each token belongs to, ``[b, s]``.
        alpha: Noise scale.
    """
    scale = alpha / torch.sqrt(lengths.clamp(min=1).to(embeds.dtype) * embeds.shape[-1])  # [b, s]
    noise = torch.empty_like(embeds).uniform_(-1, 1)  # [b, s, d]
    return embeds + noise * scale[..., None]


def _sample_lengths(attention_mask: torch.Tensor | None, segment_ids: torch.Tensor | None) -> torch.Tensor:
    """Real length of the sample each token belongs to ``[b, s]`` (packed rows: of its segment)."""
    if segment_ids is not None:
        same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [b, s, s]
        return same.sum(-1)
    if attention_mask is None:
        raise ValueError("NEFTune needs the attention_mask (or segment_ids) to know each sample's length")
    return attention_mask.sum(-1, keepdim=True).expand_as(attention_mask)


def _new_token_rows(language_model: nn.Module, token_ids: list[int]) -> dict[str, list[int]]:
    """Names (inside ``language_model``) of its input and output embeddings, mapped to the new tokens' rows.

    A tied head is listed too: it shares the embeddings' trainable rows (:func:`~vlmkit.adapters.add_trainable_rows`),
    so a new token's logit moves with its embedding, as it does once merged.
    """
    layers = [language_model.get_input_embeddings()]
    get_output = getattr(language_model, "get_output_embeddings", None)
    output = get_output() if get_output is not None else None
    if output is not None:
        layers.append(output)
    names = {id(m): n for n, m in language_model.named_modules()}
    return {names[id(layer)]: sorted(set(token_ids)) for layer in layers if id(layer) in names}


def _full_grid_mask(pixel_values: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
    """``[n, H/patch, W/patch]`` all-True patch mask: every patch of every image is real."""
    n, _, height, width = pixel_values.shape
    patch = encoder.patch_size
    return torch.ones(n, height // patch, width // patch, dtype=torch.bool, device=pixel_values.device)


def _weight_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype ``module`` computes in: that of its first floating-point weight (``default`` without one)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)


def _pack_real_patches(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each image's real patches to the front, keeping their order.

    Args:
        features: ``[n, p, d]`` patch features of a padded 2-D grid, row-major.
        mask: ``[n, p]`` bool, True on real patches.

    Returns:
        The reordered features ``[n, p, d]`` and the mask of the packed layout ``[n, p]``.
    """
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real first, stable
    packed = features.gather(1, order.unsqueeze(-1).expand_as(features))  # [n, p, d]
    positions = torch.arange(mask.shape[1], device=mask.device)
    return packed, positions.unsqueeze(0) < mask.sum(1, keepdim=True)
