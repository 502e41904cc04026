"""Any transformers ``AutoModelForCausalLM`` (Llama, Mistral, Qwen2, Gemma, Phi, GPT-2, GPT-NeoX, OPT, Falcon, ...).

The part owns its tokenizer, because the vocabulary is the LM's: on construction the
VLM special tokens are added to the tokenizer and the embedding matrix grows to
match, so the ids the data pipeline writes are the ids the model embeds. Its decoder
layers are found by structure (:func:`~vlmkit.llm.layers.find_decoder_layers`), never by
attribute name, and packed rows reach its attention in the form its implementation takes.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from vlmkit.attention import (
    SEGMENT_SDPA,
    attention_implementation,
    block_diagonal_causal_mask,
    flash_varlen_kwargs,
    segment_lengths,
    use_segment_sdpa,
    with_segments,
)
from vlmkit.dtypes import parse_dtype
from vlmkit.llm.layers import find_decoder_layers, packing_unsupported_reason
from vlmkit.quantization import Quantization, bitsandbytes_config, keep_compute_dtype, quantized_device_map
from vlmkit.text.tokenizer import load_tokenizer

__all__ = ["TransformersCausalLM", "build_transformers_config", "output_cache", "parse_dtype"]


def build_transformers_config(config: dict[str, Any], argument: str = "config"):
    """Make a transformers ``PretrainedConfig`` from a plain dict with a ``model_type`` key.

    Raises:
        ValueError: Naming ``argument`` when ``model_type`` is missing or unknown.
    """
    from transformers import AutoConfig

    config = dict(config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"{argument} needs a 'model_type' key (e.g. 'mistral', 'llama', 'qwen2')")
    try:
        return AutoConfig.for_model(model_type, **config)
    except ValueError as err:
        raise ValueError(f"{argument}: unknown model_type {model_type!r} ({err})") from err


class TransformersCausalLM(nn.Module):
    """A transformers decoder-only LM, driven by input embeddings.

    Args:
        name_or_path: Hub name or local directory of a causal LM checkpoint.
        config: Instead of a checkpoint, a transformers config as a dict with a
            ``model_type`` key (random init; for tiny test and toy models).
        tokenizer: Tokenizer name or path; ``None`` uses ``name_or_path``;
            ``"synthetic"`` selects vlmkit's built-in offline tokenizer.
        torch_dtype: Weight dtype name (``"float32"``, ``"bfloat16"``); ``None`` keeps
            the checkpoint's dtype, or float32 for ``config``.
        attn_implementation: ``"sdpa"``, ``"eager"``, ``"flex_attention"`` or a flash-attention variant
            (``"flash_attention_2"``, ``"flash_attention_3"``, a ``kernels`` hub kernel). Packed rows get a 4-D
            block-diagonal mask under the first three and varlen lengths under flash attention; under ``"sdpa"``
            (vlmkit's :data:`~vlmkit.attention.SEGMENT_SDPA`) each sample's attention is computed on its own.
            ``"flash_attention_2"`` falls back to ``"sdpa"``, with a warning, when the flash-attn package or
            CUDA is missing.
        quantization: Load the checkpoint's linear layers quantized by bitsandbytes (``"nf4"``,
            ``"fp4"``, ``"int8"``) for QLoRA; needs ``name_or_path``. The part must then be
            ``frozen`` or adapted (``lora``/``dora``). Each process loads onto its own GPU (``LOCAL_RANK``).
        compute_dtype: Dtype name of 4-bit matmuls and non-quantized weights when quantized
            (``"bfloat16"`` on GPU; ``"float32"`` on CPU).

    Example:
        >>> lm = TransformersCausalLM(config={"model_type": "mistral", "hidden_size": 64, ...},
        ...                           tokenizer="synthetic")  # doctest: +SKIP
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        torch_dtype: str | None = None,
        attn_implementation: str | None = "sdpa",
        quantization: Quantization | None = None,
        compute_dtype: str = "bfloat16",
    ) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        if (name_or_path is None) == (config is None):
            raise ValueError("give exactly one of name_or_path (a checkpoint) or config (random init)")
        if tokenizer is None and name_or_path is None:
            raise ValueError("tokenizer is required when the model is built from config (e.g. tokenizer='synthetic')")
        if quantization is not None and name_or_path is None:
            raise ValueError("quantization needs a checkpoint (name_or_path): weights are quantized as they load")
        dtype = parse_dtype(torch_dtype, "language_model.torch_dtype")
        attn_implementation = attention_implementation(attn_implementation, "language_model.attn_implementation")
        self.quantization = quantization
        self.tokenizer = load_tokenizer(tokenizer or name_or_path)
        if name_or_path is not None:
            extra = {}
            if quantization is not None:
                compute = parse_dtype(compute_dtype, "language_model.compute_dtype")
                config_ = bitsandbytes_config(quantization, compute, "language_model.quantization")
                extra = {"quantization_config": config_, "device_map": quantized_device_map()}
                dtype = dtype or compute
            self.model = AutoModelForCausalLM.from_pretrained(
                name_or_path, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=False, **extra
            )
            keep_compute_dtype(self.model)
            self.model.train()  # from_pretrained returns eval mode; a part starts in train mode like any nn.Module
        else:
            hf_config = build_transformers_config(config, "language_model.config")
            self.model = AutoModelForCausalLM.from_config(
                hf_config, dtype=dtype or torch.float32, attn_implementation=attn_implementation
            )
        use_segment_sdpa(self.model)  # packed rows: attention per sample
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            # New rows start at the mean of the pretrained embeddings (random init otherwise).
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=name_or_path is not None)
        self.model.config.use_cache = False
        forward_arguments = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward_arguments else "past_key_values"
        self.hidden_size: int = self.model.config.hidden_size
        self._layers_name = find_decoder_layers(self.model)
        self._block_class = type(self.decoder_layers()[0])  # before any wrapper (checkpointing, FSDP) renames it

    @property
    def block_class(self) -> type[nn.Module]:
        """The decoder layer class, e.g. ``MistralDecoderLayer`` or ``GPT2Block``."""
        return self._block_class

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding matrix."""
        return self.model.get_input_embeddings().num_embeddings

    @property
    def supports_packing(self) -> bool:
        """Whether packed rows can run (the family restarts positions, the attention keeps samples apart).

        Positions must restart per sample (not ALiBi) and the attention take a 4-D block-diagonal mask or varlen
        lengths; :meth:`forward` names the reason when not.
        """
        return self._packing_unsupported_reason() is None

    def _packing_unsupported_reason(self) -> str | None:
        reason = packing_unsupported_reason(self.model, self._block_class)
        if reason is not None:
            return reason
        implementation = self.model.config._attn_implementation or "eager"
        if "flash" not in implementation and implementation not in _FOUR_D_MASK_IMPLEMENTATIONS:
            return (
                f"it runs attn_implementation={implementation!r}, which takes neither a 4-D block-diagonal mask "
                f"({', '.join(_FOUR_D_MASK_IMPLEMENTATIONS)}) nor varlen lengths (flash attention)"
            )
        return None

    def decoder_layers(self) -> nn.ModuleList:
        """The decoder layers in order, wherever the family keeps them (``model.layers``, ``transformer.h``, ...)."""
        return self.model.get_submodule(self._layers_name)

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table."""
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        """The output head (``lm_head``), which may share its weight with the input embeddings."""
        return self.model.get_output_embeddings()

    def resize_token_embeddings(self, num_tokens: int) -> None:
        """Grow or shrink the (tied) embeddings to ``num_tokens`` rows."""
        self.model.resize_token_embeddings(num_tokens, mean_resizing=False)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        segment_ids: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ):
        """Run the LM on embeddings ``[b, s, d]``.

        Args:
            inputs_embeds: Input embeddings ``[b, s, d]``.
            attention_mask: ``1`` on real tokens ``[b, s]`` (ignored for packed rows).
            position_ids: Positions ``[b, s]``; for packed rows they restart at 0 for every sample.
            cache: KV cache from a previous call.
            use_cache: Return the KV cache.
            segment_ids: Packed rows: the sample index of every token ``[b, s]`` (padding ``-1``). Attention stays
                within each sample: a block-diagonal causal 4-D mask for ``eager``/``sdpa``/``flex_attention``;
                flash attention gets the rows flattened to one sequence with varlen lengths and no mask.
            logits_to_keep: Compute the logits of the last ``logits_to_keep`` positions only (``0``: all), or at the
                positions of a ``[k]`` index tensor. The head is the largest matmul of a small LM: generation's prefill
                keeps one position, training the labelled ones.
            **kwargs: Passed to the transformers model.

        Returns:
            The LM's ``CausalLMOutputWithPast``; with ``use_cache`` its KV cache is ``output.cache`` (also under
            transformers versions that call it ``past_key_values``).

        Raises:
            ValueError: For packed rows without ``position_ids``, under an attention implementation that takes
                neither a 4-D mask nor varlen lengths, or for a family whose positions cannot restart per sample.
        """
        if isinstance(logits_to_keep, torch.Tensor) or logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        if segment_ids is not None:
            return self._packed_forward(inputs_embeds, position_ids, segment_ids, **kwargs)
        kwargs[self._cache_argument] = cache
        out = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **kwargs,
        )
        if getattr(out, "cache", None) is None:  # transformers < 5.2x names it past_key_values
            out.cache = output_cache(out)
        return out

    def _packed_forward(
        self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor | None, segment_ids: torch.Tensor, **kwargs: Any
    ):
        """Packed rows ``[b, s]`` with attention isolated per sample, in the form the attention implementation takes."""
        name = type(self.model).__name__
        if position_ids is None:
            raise ValueError("packed rows (segment_ids) need position_ids restarting at 0 for every sample")
        reason = self._packing_unsupported_reason()
        if reason is not None:
            raise ValueError(f"{name} cannot run packed rows: {reason}; train it without packing")
        implementation = self.model.config._attn_implementation or "eager"
        if "flash" in implementation:  # transformers' own test (is_flash_attention_requested)
            # A 4-D mask would be read as a 2-D padding mask: give varlen lengths instead, over the rows flattened to
            # one sequence, so kernels that read them and models that infer them from restarting position_ids (which
            # transformers only does for a batch of 1) both keep the samples apart.
            b, s = segment_ids.shape
            keep = kwargs.pop("logits_to_keep", 0)  # positions of a row, not of the flattened sequence
            out = self.model(
                inputs_embeds=inputs_embeds.reshape(1, b * s, -1),
                attention_mask=None,
                position_ids=position_ids.reshape(1, b * s),
                use_cache=False,
                **flash_varlen_kwargs(segment_ids),
                **kwargs,
            )
            out.logits = out.logits.reshape(b, s, -1)
            if isinstance(keep, torch.Tensor) or keep:
                out.logits = out.logits[:, keep if isinstance(keep, torch.Tensor) else slice(-keep, None)]
            return out
        mask = block_diagonal_causal_mask(segment_ids, self.get_input_embeddings().weight.dtype)  # [b, 1, s, s]
        if implementation == SEGMENT_SDPA:  # attention per sample (sum of L_i^2), the mask for any other reader
            mask = with_segments(mask, segment_lengths(segment_ids))
        return self.model(
            inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids, use_cache=False, **kwargs
        )


_FOUR_D_MASK_IMPLEMENTATIONS = ("eager", "sdpa", SEGMENT_SDPA, "flex_attention")
"""transformers uses a 4-D attention mask as given under these (``masking_utils`` returns it unchanged)."""


def output_cache(output: Any) -> Any:
    """The KV cache of a transformers output (``cache`` in transformers >= 5.2x, else ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    if cache is not None or isinstance(getattr(type(output), "past_key_values", None), property):
        return cache  # transformers >= 5.2x: past_key_values is a deprecated alias of cache (reading it warns)
    return getattr(output, "past_key_values", None)
