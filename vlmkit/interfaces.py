"""The contracts of the four kinds of parts: exactly what the rest of vlmkit calls on a part, and nothing more.

Parts are plain ``nn.Module``s; these ``Protocol``s name every attribute and method that the model
(``vlmkit.model``), the data pipelines (which ask the model for its tokenizer and image normalisation), trainability
and training (per-block policies) use. Any module with these members fits: structural typing, no base class to
inherit from, ``isinstance(part, VisionEncoder)`` checks the members at run time. CONTRIBUTING.md, "Add a part",
walks through writing one; ``tests/test_contracts.py`` builds a part of each kind from these Protocols alone and
trains it.

Capabilities are declared, never inferred from a part's class: ``supports_packing`` (sequence packing of several
samples per row), ``block_class`` (the repeated block that LoRA targets, activation checkpointing and FSDP units are
derived from; ``None`` for a part without one), ``quantization`` (the part's weights are 4-/8-bit: it cannot be
trained in full). A connector whose tokens depend on the grid's shape says so by satisfying :class:`GridConnector`
(it has ``num_grid_tokens``).

Shapes use ``n`` for the number of images in a batch (images of all samples stacked), ``p`` for patches per image,
``v`` for visual tokens per image, ``b`` for text batch size and ``s`` for text length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedTokenizerBase


@runtime_checkable
class VisionEncoder(Protocol):
    """Images to patch features.

    ``forward(pixel_values [n, 3, H, W], patch_mask [n, H/patch, W/patch] | None) -> [n, p, hidden_size]`` where
    ``p = (H/patch) * (W/patch)``: one feature per patch in row-major order, the CLS/pooling token (if any) dropped.
    Images of different sizes are padded bottom/right to a common ``H, W``; ``patch_mask`` is ``True`` on real
    patches (a top-left rectangle per image, ``None``: all real). Padding must not influence real patches: an image's
    features are the same alone or padded in a batch. Padding rows of the output may hold anything.
    """

    hidden_size: int
    """Feature dimension ``d_vision`` of the output."""
    patch_size: int
    """Side of one square patch in pixels; image sides are multiples of it."""
    image_mean: tuple[float, float, float]
    """Per-channel mean the data pipelines normalise pixels with."""
    image_std: tuple[float, float, float]
    """Per-channel std the data pipelines normalise pixels with."""
    quantization: str | None
    """``"nf4"``, ``"fp4"``, ``"int8"`` when the weights are quantized (``train_vision_encoder: full`` is then
    refused), else ``None``."""

    @property
    def block_class(self) -> type[nn.Module] | None:
        """The repeated block (an encoder layer): LoRA targets, activation checkpointing and FSDP units."""

    def __call__(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Connector(Protocol):
    """Patch features to visual tokens in the language model's space.

    ``forward(features [n, p, in_dim], mask [n, p] | None) -> [n, v, out_dim]``. The model moves each image's real
    patches to the front of its sequence (row-major order kept) before the connector, so ``mask`` (``True`` on real
    patches, ``None``: all real) marks a prefix; padding patches must not influence real outputs. The model builds a
    connector as ``connector_factory(in_dim, out_dim)``, so its first two constructor arguments are always ``in_dim``
    and ``out_dim``.
    """

    in_dim: int
    """Width of the patch features (the encoder's ``hidden_size``)."""
    out_dim: int
    """Width of the visual tokens (the LM's ``hidden_size`` under fully autoregressive fusion)."""

    @property
    def block_class(self) -> type[nn.Module] | None:
        """The repeated block (e.g. a perceiver layer), or ``None`` for a connector without one."""

    def num_visual_tokens(self, num_patches: int) -> int:
        """How many visual tokens ``v`` one image of ``num_patches`` real patches becomes (raise if it cannot)."""

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Which visual tokens ``[n, v]`` are real, from the patch ``mask`` ``[n, p]``; ``None``: all of them."""

    def __call__(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class GridConnector(Connector, Protocol):
    """A connector whose tokens depend on the 2-D shape of the patch grid (pixel shuffle).

    It gets the padded grid instead of the packed sequence: ``forward(features [n, rows * cols, in_dim]``
    row-major, ``mask [n, rows, cols] | None)`` with each image's real patches a top-left rectangle, and its
    ``output_mask`` takes that mask too. The model counts its tokens per image with
    ``num_grid_tokens(rows_i, cols_i)``, as an image of ``rows x cols`` patches and one of ``cols x rows``
    may differ.
    """

    def num_grid_tokens(self, rows: int, cols: int) -> int:
        """How many visual tokens one image whose real patches form a ``rows x cols`` grid becomes."""


@runtime_checkable
class LanguageModelOutput(Protocol):
    """What a :class:`LanguageModel` returns (a transformers ``CausalLMOutputWithPast`` fits)."""

    logits: torch.Tensor
    """Next-token logits ``[b, s, vocab]``."""
    cache: Any
    """With ``use_cache``: the KV cache to give back as ``cache`` in the next call; else ``None``."""


@runtime_checkable
class LanguageModel(Protocol):
    """A decoder-only causal LM driven by input embeddings, owning its tokenizer.

    ``forward(inputs_embeds [b, s, d], attention_mask [b, s] | None, position_ids [b, s] | None, cache, use_cache,
    segment_ids [b, s] | None) -> LanguageModelOutput``. ``attention_mask`` is ``1`` on real tokens (prompts are
    left-padded in generation, so ``position_ids`` are given then). ``segment_ids`` marks packed rows (several samples
    per row, ``position_ids`` restarting per sample, padding ``-1``): the LM keeps the samples' attention apart in
    whatever form its attention implementation takes; only called so when ``supports_packing``. Optionally, a
    ``logits_to_keep`` argument (``k > 0``: the logits of the last ``k`` positions only, ``[b, k, vocab]``) saves the
    head's matmul over a prompt in generation; without it the model slices the full logits.
    """

    hidden_size: int
    """Width ``d`` of the embeddings."""
    tokenizer: PreTrainedTokenizerBase
    """The LM's tokenizer, holding the VLM special tokens (``vlmkit.text.add_vlm_special_tokens``) and a pad token;
    the model reads its ids (``convert_tokens_to_ids``, ``pad_token_id``, ``eos_token_id``) and decodes with it."""
    quantization: str | None
    """``"nf4"``, ``"fp4"``, ``"int8"`` when the weights are quantized (``full`` training is then refused), else
    ``None``."""
    supports_packing: bool
    """Whether ``forward`` takes ``segment_ids`` (sequence packing); data modules refuse ``pack_length`` otherwise."""

    @property
    def block_class(self) -> type[nn.Module] | None:
        """The decoder layer class: LoRA targets, activation checkpointing and FSDP units."""

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table ``[vocab, d]``; the rows of the VLM special tokens train even when frozen."""

    def get_output_embeddings(self) -> nn.Module | None:
        """The output head ``[vocab, d]`` (``None`` or the input table itself when tied); its new rows train too."""

    def decoder_layers(self) -> nn.ModuleList:
        """The decoder layers, in order; cross-attention fusion hooks blocks in front of some of them."""

    def __call__(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        segment_ids: torch.Tensor | None = None,
    ) -> LanguageModelOutput: ...


@runtime_checkable
class Fusion(Protocol):
    """How visual tokens enter the language model.

    Fully autoregressive fusion splices them into the embedding sequence at image placeholder positions;
    cross-attention fusion lets text attend to them from blocks inserted between decoder layers. Both keep the same
    call signature, so swapping is one YAML block. ``forward(language_model, inputs_embeds [b, s, d],
    image_token_mask [b, s], visual_tokens [n, v, d_visual] | None, visual_mask [n, v] | None, **lm_kwargs) ->
    LanguageModelOutput``: ``image_token_mask`` is ``True`` at the ``<image>`` placeholders, ``visual_tokens`` holds
    the images in text order (``None`` for a text-only batch, and in the decoding steps of generation, where the
    fusion reuses what the prompt's call gave it), ``visual_mask`` which of them are real; ``lm_kwargs`` are the
    :class:`LanguageModel`'s ``attention_mask``, ``position_ids``, ``cache``, ``use_cache`` and ``segment_ids``.
    """

    supports_packing: bool
    """Whether packed rows (``segment_ids``) can pass through this fusion."""

    @property
    def block_class(self) -> type[nn.Module] | None:
        """The repeated block the fusion adds (e.g. a gated cross-attention block), or ``None``."""

    def bind(self, language_model: LanguageModel, visual_dim: int) -> None:
        """Attach to the language model once, at composition (create any new blocks)."""

    def tokens_per_image(self, num_visual_tokens: int) -> int:
        """How many ``<image>`` placeholder tokens stand for one image of ``num_visual_tokens`` in the text."""

    def __call__(
        self,
        language_model: LanguageModel,
        inputs_embeds: torch.Tensor,
        image_token_mask: torch.Tensor,
        visual_tokens: torch.Tensor | None,
        visual_mask: torch.Tensor | None = None,
        **lm_kwargs: Any,
    ) -> LanguageModelOutput: ...
