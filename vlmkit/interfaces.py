"""The small contracts every vlmkit part satisfies.

Parts are plain ``nn.Module``s; these ``Protocol``s only name what the rest of the
system relies on, so any module with the same attributes and call signature fits
(structural typing, no base class to inherit from).

Shapes use ``n`` for the number of images in a batch (images of all samples
stacked), ``p`` for patches per image, ``v`` for visual tokens per image,
``b`` for text batch size and ``s`` for text length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn


@runtime_checkable
class VisionEncoder(Protocol):
    """Images to patch features.

    ``forward(pixel_values [n, 3, H, W], patch_mask [n, H/patch, W/patch] | None)
    -> [n, p, hidden_size]`` where ``p = (H/patch) * (W/patch)``: one feature per
    patch in row-major order, the CLS/pooling token (if any) dropped. ``patch_mask``
    is ``True`` on real patches; padding patches must not influence real ones.
    """

    hidden_size: int
    """Feature dimension ``d_vision`` of the output."""
    patch_size: int
    """Side of one square patch in pixels; image sides are multiples of it."""
    image_mean: tuple[float, float, float]
    """Per-channel mean used to normalise pixels for this encoder."""
    image_std: tuple[float, float, float]
    """Per-channel std used to normalise pixels for this encoder."""

    @property
    def block_class(self) -> type[nn.Module]:
        """The repeated transformer block class (for wrapping/checkpointing policies)."""

    def __call__(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Connector(Protocol):
    """Patch features to visual tokens in the language model's space.

    ``forward(features [n, p, in_dim], mask [n, p] | None) -> [n, v, out_dim]``.
    ``mask`` is ``True`` on real patches. A connector is constructed by the model
    as ``connector_factory(in_dim, out_dim)``, so its first two constructor
    arguments are always ``in_dim`` and ``out_dim``.
    """

    in_dim: int
    out_dim: int

    def num_visual_tokens(self, num_patches: int) -> int:
        """How many visual tokens one image of ``num_patches`` patches becomes."""

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
class LanguageModel(Protocol):
    """A decoder-only causal LM driven by input embeddings.

    ``forward(inputs_embeds [b, s, d], attention_mask [b, s], position_ids, cache,
    use_cache, segment_ids) -> transformers CausalLMOutputWithPast`` (``logits [b, s, vocab]``).
    ``segment_ids [b, s]`` marks packed rows (several samples per row, ``position_ids``
    restarting per sample): the LM keeps the samples' attention apart in whatever form its
    attention implementation takes. An optional ``get_output_embeddings()`` gives the output
    head, whose rows of the new special tokens then train too.
    """

    hidden_size: int

    @property
    def block_class(self) -> type[nn.Module]:
        """The decoder layer class (for wrapping/checkpointing and fusion policies)."""

    def get_input_embeddings(self) -> nn.Embedding: ...

    def resize_token_embeddings(self, num_tokens: int) -> None: ...

    def decoder_layers(self) -> nn.ModuleList:
        """The decoder layers, in order (cross-attention fusion wraps some of them)."""


@runtime_checkable
class Fusion(Protocol):
    """How visual tokens enter the language model.

    Fully autoregressive fusion splices them into the embedding sequence at image
    placeholder positions; cross-attention fusion lets text attend to them from
    blocks inserted between decoder layers. Both keep the same call signature, so
    swapping is one YAML block.
    """

    def bind(self, language_model: LanguageModel, visual_dim: int) -> None:
        """Attach to the language model once, at composition (create any new blocks)."""

    def tokens_per_image(self, num_visual_tokens: int) -> int:
        """How many ``<image>`` placeholder tokens stand for one image in the text."""

    def __call__(
        self,
        language_model: LanguageModel,
        inputs_embeds: torch.Tensor,
        image_token_mask: torch.Tensor,
        visual_tokens: torch.Tensor | None,
        **lm_kwargs,
    ): ...
