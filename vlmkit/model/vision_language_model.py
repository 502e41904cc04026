"""``VisionLanguageModel``: vision encoder -> connector -> fusion -> language model.

The four parts are injected and used only through their contracts (:mod:`vlmkit.interfaces`); the model wires them
and checks that they agree (widths, image placeholders versus visual tokens, packing). The connector is given as a
factory ``(in_dim, out_dim) -> Connector`` so its widths follow the encoder and the LM; swapping it from YAML or the
command line needs no dimension bookkeeping. Generation is :mod:`vlmkit.model.generation`, NEFTune
:mod:`vlmkit.model.neftune`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vlmkit.checks import check_equal, host_reads_are_free
from vlmkit.deprecation import renamed_argument
from vlmkit.fusion.autoregressive import FullyAutoregressiveFusion
from vlmkit.interfaces import Connector, Fusion, GridConnector, LanguageModel, LanguageModelOutput, VisionEncoder
from vlmkit.model.generation import generate
from vlmkit.model.neftune import neftune, sample_lengths
from vlmkit.model.pretrained import build_from_config, from_pretrained, push_to_hub, save_pretrained
from vlmkit.model.token_budget import TokenBudget, token_budget
from vlmkit.text.tokenizer import END_OF_UTTERANCE_TOKEN, IMAGE_TOKEN, VLM_SPECIAL_TOKENS
from vlmkit.trainability import Trainability, apply_activation_checkpointing, apply_trainability

ConnectorFactory = Callable[[int, int], nn.Module]
"""Builds a :class:`~vlmkit.interfaces.Connector` from ``(in_dim, out_dim)``; in YAML, a ``class_path`` plus
``init_args`` without the dims. (Constructor arguments are typed ``nn.Module`` rather than with the Protocols, which
YAML parsing would take for callables; the Protocols are what the model uses of them.)"""


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
            (:meth:`block_classes`) in the backward pass instead of storing them (vlmkit's one switch for it:
            :func:`~vlmkit.trainability.apply_activation_checkpointing`).
        compile_blocks: Compile every repeated block (:meth:`block_classes`) with ``torch.compile``, block by block
            (regional compilation: one graph per block class, compiled once, reused by every layer); the forward
            stays eager between blocks. Same results within float tolerance; the first steps pay the compilation.
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

    vision_encoder: VisionEncoder
    connector: Connector
    fusion: Fusion
    language_model: LanguageModel

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
        compile_blocks: bool = False,
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
        apply_trainability(
            self.vision_encoder, train_vision_encoder, "train_vision_encoder", quantization=vision_encoder.quantization
        )
        apply_trainability(
            self.language_model,
            train_language_model,
            "train_language_model",
            trainable_tokens=_new_token_rows(language_model, tokenizer.convert_tokens_to_ids(list(VLM_SPECIAL_TOKENS))),
            quantization=language_model.quantization,
        )
        apply_trainability(self.fusion, train_fusion, "train_fusion")
        self._block_classes = self.block_classes()  # before checkpoint wrappers hide the layer types
        if gradient_checkpointing:
            apply_activation_checkpointing(self, self._block_classes)
        if compile_blocks:
            for module in self.modules():
                if isinstance(module, self._block_classes):
                    module.compile()  # in place: nn.Module.compile
        self.image_token_id: int = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.chat_template = chat_template
        if stop_token_ids is None:
            stop_token_ids = (tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE_TOKEN), tokenizer.eos_token_id)
        self.stop_token_ids: tuple[int, ...] = tuple(dict.fromkeys(t for t in stop_token_ids if t is not None))
        self._token_tables: dict[tuple[int, int, str], torch.Tensor] = {}  # see _check_placeholders
        self.config: dict[str, Any] | None = None  # the composition, when known (see from_config)

    @property
    def tokenizer(self):
        """The language model's tokenizer, with the image tokens."""
        return self.language_model.tokenizer

    @property
    def supports_packing(self) -> bool:
        """Whether packed rows (several samples per row, ``segment_ids``) can run: the fusion and the LM declare it."""
        return bool(self.fusion.supports_packing and self.language_model.supports_packing)

    def check_packing(self) -> None:
        """Raise ``ValueError`` naming the part that does not support packed rows (see :attr:`supports_packing`)."""
        refusing = [type(part).__name__ for part in (self.fusion, self.language_model) if not part.supports_packing]
        if refusing:
            raise ValueError(
                f"packed rows (segment_ids, sequence packing) need a fusion and a language model that support them: "
                f"{' and '.join(refusing)} declare{'s' if len(refusing) == 1 else ''} supports_packing=False"
            )

    def block_classes(self) -> tuple[type[nn.Module], ...]:
        """The repeated block classes of all parts (vision layers, connector layers, fusion blocks, decoder layers).

        Sharding (FSDP) and activation-checkpointing policies are derived from these, never hard-coded per model.
        """
        if getattr(self, "_block_classes", None) is not None:
            return self._block_classes
        classes: list[type[nn.Module]] = []
        for part in (self.vision_encoder, self.connector, self.fusion, self.language_model):
            block = part.block_class
            if block is not None and block not in classes:
                classes.append(block)
        return tuple(classes)

    def num_image_tokens(self, height: int, width: int) -> int:
        """Placeholder tokens the text must hold for one processed ``height x width`` image."""
        patch = self.vision_encoder.patch_size
        return self._tokens_for_grid(height // patch, width // patch)

    def token_budget(
        self,
        height: int,
        width: int,
        max_image_size: int = 980,
        min_image_size: int = 378,
        split_images: bool = False,
        *,
        split: bool | None = None,
    ) -> TokenBudget:
        """Encoder patches and visual tokens a ``height x width`` image costs this model.

        See :func:`~vlmkit.model.token_budget.token_budget`; with ``tile_size`` a split image is tiled (Idefics3's
        grid) and ``max_image_size`` is the longest side images are resized to before tiling. ``split`` is the
        deprecated name of ``split_images``.
        """
        owner = "VisionLanguageModel.token_budget"
        split_images = renamed_argument(owner, "split", split, "split_images", split_images, False)
        return token_budget(
            height,
            width,
            self.vision_encoder.patch_size,
            max_image_size=max_image_size,
            min_image_size=min_image_size,
            split_images=split_images,
            tile_size=self.tile_size,
            tokens_for_grid=self._tokens_for_grid,
        )

    def encode_images(
        self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images ``[n, 3, H, W]`` -> visual tokens ``[n, v, d_llm]`` and their real-token mask ``[n, v]``.

        The encoder sees the padded 2-D grid; before the connector each image's real patches are moved to
        the front of its sequence (row-major order kept), so a connector sees exactly the sequence the
        image gives alone, followed by padding. A :class:`~vlmkit.interfaces.GridConnector` gets the padded grid
        and its ``[n, rows, cols]`` mask instead (its tokens depend on each image's rows and columns).
        """
        features = self.vision_encoder(pixel_values, patch_mask)  # [n, p, d_vision]
        mask = None
        if self._grid_connector:  # the padded 2-D grid: the connector's tokens depend on each image's rows and cols
            mask = patch_mask if patch_mask is not None else _full_grid_mask(pixel_values, self.vision_encoder)
        elif patch_mask is not None:
            features, mask = _real_patches_first(features, patch_mask.flatten(1))  # [n, p, d_vision], [n, p]
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
        logits_to_keep: int | torch.Tensor = 0,
    ) -> LanguageModelOutput:
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
                (see ``vlmkit.data.sequence_packing``). Needs :attr:`supports_packing`.
            logits_to_keep: Logits of the last ``logits_to_keep`` positions only (``0``: all; generation's prefill
                keeps one), or at the positions of a ``[k]`` index tensor (training's answer-only loss).

        Returns:
            The LM's output (``logits [b, s, vocab]``; with ``use_cache`` its ``cache``).

        Raises:
            ValueError: If placeholders and visual tokens disagree in number (both counts named), or
                ``segment_ids`` come with a part that does not support packing (named) or without ``position_ids``.
        """
        image_token_mask = input_ids == self.image_token_id  # [b, s]
        self._check_placeholders(image_token_mask, pixel_values, patch_mask)
        inputs_embeds = self.language_model.get_input_embeddings()(input_ids)  # [b, s, d_llm]
        if self.training and self.neftune_alpha > 0:
            inputs_embeds = neftune(inputs_embeds, sample_lengths(attention_mask, segment_ids), self.neftune_alpha)
        packing = {}
        if segment_ids is not None:
            self._check_packing(position_ids)
            packing = {"segment_ids": segment_ids}  # the LM isolates the samples the way its attention takes it
        keeping = isinstance(logits_to_keep, torch.Tensor) or logits_to_keep > 0
        keep_in_lm = keeping and "logits_to_keep" in inspect.signature(self.language_model.forward).parameters
        if keep_in_lm:
            packing["logits_to_keep"] = logits_to_keep
        visual_tokens, visual_mask = None, None
        if pixel_values is not None and pixel_values.shape[0] > 0:
            visual_tokens, visual_mask = self.encode_images(pixel_values, patch_mask)  # [n, v, d_llm]
        out = self.fusion(
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
        if keeping and not keep_in_lm:  # a language model without the option: same logits, sliced
            kept = logits_to_keep if isinstance(logits_to_keep, torch.Tensor) else slice(-logits_to_keep, None)
            out.logits = out.logits[:, kept]
        return out

    def _check_packing(self, position_ids: torch.Tensor | None) -> None:
        """Packed rows need a fusion that passes them through and per-sample ``position_ids``.

        The language model refuses packed rows itself, naming why (its attention, its position scheme).
        """
        if not self.fusion.supports_packing:
            self.check_packing()
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

    generate = generate
    """Greedy (or sampled) decoding with a KV cache: :func:`vlmkit.model.generation.generate` (``vlm`` is ``self``)."""

    from_config = staticmethod(build_from_config)
    """Build from a composition ``{"class_path", "init_args"}``: :func:`vlmkit.model.pretrained.build_from_config`."""
    from_pretrained = staticmethod(from_pretrained)
    """Load a :meth:`save_pretrained` folder: :func:`vlmkit.model.pretrained.from_pretrained`."""
    save_pretrained = save_pretrained
    """Config, safetensors, tokenizer, model card: :func:`vlmkit.model.pretrained.save_pretrained`."""
    push_to_hub = push_to_hub
    """:meth:`save_pretrained` and upload to the Hugging Face Hub: :func:`vlmkit.model.pretrained.push_to_hub`."""


def _new_token_rows(language_model: LanguageModel, token_ids: list[int]) -> dict[str, list[int]]:
    """Names (inside ``language_model``) of its input and output embeddings, mapped to the new tokens' rows.

    A tied head is listed too: it shares the embeddings' trainable rows (:func:`~vlmkit.adapters.add_trainable_rows`),
    so a new token's logit moves with its embedding, as it does once merged.
    """
    layers = [language_model.get_input_embeddings()]
    output = language_model.get_output_embeddings()
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


def _real_patches_first(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each image's real patches to the front, keeping their order.

    Args:
        features: ``[n, p, d]`` patch features of a padded 2-D grid, row-major.
        mask: ``[n, p]`` bool, True on real patches.

    Returns:
        The reordered features ``[n, p, d]`` and the mask of the new layout (a prefix of each row) ``[n, p]``.
    """
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real first, stable
    reordered = features.gather(1, order.unsqueeze(-1).expand_as(features))  # [n, p, d]
    positions = torch.arange(mask.shape[1], device=mask.device)
    return reordered, positions.unsqueeze(0) < mask.sum(1, keepdim=True)
