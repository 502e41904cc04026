"""Any transformers ``AutoModelForCausalLM`` (Llama, Mistral, Qwen2, ...) as a vlmkit part.

The part owns its tokenizer, because the vocabulary is the LM's: on construction the
VLM special tokens are added to the tokenizer and the embedding matrix grows to
match, so the ids the data pipeline writes are the ids the model embeds.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from vlmkit.attention import attention_implementation
from vlmkit.quantization import Quantization, bitsandbytes_config, keep_compute_dtype, quantized_device_map
from vlmkit.text.tokenizer import load_tokenizer


def parse_dtype(name: str | None) -> torch.dtype | None:
    """The ``torch.dtype`` named ``name`` (``"bfloat16"``, ``"float32"``); ``None`` stays ``None``."""
    if name is None:
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"torch_dtype={name!r} is not a torch dtype name (e.g. 'float32', 'bfloat16')")
    return dtype


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
        attn_implementation: ``"sdpa"``, ``"eager"`` or ``"flash_attention_2"`` (``"sdpa"``, with a warning,
            when the flash-attn package or CUDA is missing).
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
        dtype = parse_dtype(torch_dtype)
        attn_implementation = attention_implementation(attn_implementation, "language_model.attn_implementation")
        self.quantization = quantization
        self.tokenizer = load_tokenizer(tokenizer or name_or_path)
        if name_or_path is not None:
            extra = {}
            if quantization is not None:
                compute = parse_dtype(compute_dtype)
                config_ = bitsandbytes_config(quantization, compute, "language_model.quantization")
                extra = {"quantization_config": config_, "device_map": quantized_device_map()}
                dtype = dtype or compute
            self.model = AutoModelForCausalLM.from_pretrained(
                name_or_path, dtype=dtype, attn_implementation=attn_implementation, trust_remote_code=False, **extra
            )
            keep_compute_dtype(self.model)
        else:
            hf_config = build_transformers_config(config, "language_model.config")
            self.model = AutoModelForCausalLM.from_config(
                hf_config, dtype=dtype or torch.float32, attn_implementation=attn_implementation
            )
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            # New rows start at the mean of the pretrained embeddings (random init otherwise).
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=name_or_path is not None)
        self.model.config.use_cache = False
        forward_arguments = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in forward_arguments else "past_key_values"
        self.hidden_size: int = self.model.config.hidden_size

    @property
    def block_class(self) -> type[nn.Module]:
        """The decoder layer class, e.g. ``MistralDecoderLayer``."""
        return type(self.decoder_layers()[0])

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding matrix."""
        return self.model.get_input_embeddings().num_embeddings

    def decoder_layers(self) -> nn.ModuleList:
        """The decoder layers in order (found through the base model's ``layers``)."""
        base = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.model
        layers = getattr(base, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise TypeError(f"{type(self.model).__name__}: cannot find its decoder layers (no `.layers` ModuleList)")
        return layers

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding table."""
        return self.model.get_input_embeddings()

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
        **kwargs: Any,
    ):
        """Run the LM on embeddings ``[b, s, d]``.

        Returns:
            The LM's ``CausalLMOutputWithPast``; with ``use_cache`` its KV cache is
            read with :func:`output_cache` (``cache`` or ``past_key_values``,
            depending on the transformers version).
        """
        kwargs[self._cache_argument] = cache
        return self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **kwargs,
        )


def output_cache(output: Any) -> Any:
    """The KV cache of a transformers output (``cache`` in transformers >= 5.2x, else ``past_key_values``)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
