"""4-bit and 8-bit base weights through bitsandbytes, for quantized fine-tuning (QLoRA, Dettmers et al. 2023).

A part loaded with ``quantization`` keeps its linear layers in NF4/FP4 (with double quantization) or int8;
its other parameters and all adapters stay in the compute dtype. Quantized weights cannot be trained, so such a
part is declared ``frozen`` or ``lora``/``dora`` (which is QLoRA). Loading needs a checkpoint path: weights are
quantized as they are loaded, on this process's own GPU (:func:`quantized_device_map`). For export, quantized
layers become plain ``nn.Linear`` layers holding their dequantized weights (:func:`dequantize`).
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from torch import nn

Quantization = Literal["nf4", "fp4", "int8"]
"""``nf4``/``fp4``: 4-bit with double quantization; ``int8``: LLM.int8()."""


def bitsandbytes_config(quantization: Quantization, compute_dtype: torch.dtype | None, argument: str = "quantization"):
    """A transformers ``BitsAndBytesConfig`` for ``quantization``.

    Raises:
        ValueError: Naming ``argument`` for an unknown scheme.
    """
    from transformers import BitsAndBytesConfig

    if quantization in ("nf4", "fp4"):
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quantization,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"{argument}={quantization!r}; expected one of 'nf4', 'fp4', 'int8'")


def quantized_device_map() -> dict[str, torch.device] | None:
    """Where a quantized checkpoint loads: ``{"": cuda:<local rank>}`` when CUDA is available, else ``None`` (CPU).

    bitsandbytes quantizes weights as they move to their device; without a ``device_map`` every process of a
    multi-GPU run would put its copy on the current CUDA device, GPU 0. The local rank is read when the model
    loads (``LOCAL_RANK``, set by torchrun and Lightning's launcher, else SLURM's ``SLURM_LOCALID``, else 0).
    A process that sees a single GPU (one ``CUDA_VISIBLE_DEVICES`` entry per rank) loads on it.

    Raises:
        ValueError: If the local rank names a GPU this process cannot see.
    """
    if not torch.cuda.is_available():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")))
    count = torch.cuda.device_count()
    index = 0 if count == 1 else local_rank
    if index >= count:
        raise ValueError(f"LOCAL_RANK={local_rank} but this process sees {count} GPUs: cannot load the quantized model")
    return {"": torch.device("cuda", index)}


def quantized_kind(module: nn.Module) -> Literal["4bit", "8bit"] | None:
    """``"4bit"`` for a bitsandbytes ``Linear4bit``, ``"8bit"`` for a ``Linear8bitLt``, else ``None``."""
    if type(module).__module__.split(".")[0] != "bitsandbytes":  # no bitsandbytes import for plain layers
        return None
    import bitsandbytes as bnb

    if isinstance(module, bnb.nn.Linear4bit):
        return "4bit"
    if isinstance(module, bnb.nn.Linear8bitLt):
        return "8bit"
    return None


def keep_compute_dtype(model: nn.Module) -> None:
    """Make 4-bit layers keep bitsandbytes' standard layout and compute in their ``compute_dtype`` on CPU, in place.

    On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer for a bfloat16 kernel the first time it runs
    without gradients, rounding its scales to bfloat16 for good: evaluation would then compute in bfloat16 whatever
    the compute dtype, differ from training, and the repacked weight no longer dequantizes (peft's DoRA layers and
    merging read it). GPUs are unaffected.
    """
    for layer in model.modules():
        if quantized_kind(layer) == "4bit":
            layer.support_avx512bf16_for_cpu = False


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The float32 weight ``[out, in]`` a bitsandbytes linear layer computes with (a plain layer's own weight)."""
    from peft.utils.integrations import dequantize_module_weight

    if getattr(getattr(layer.weight, "quant_state", None), "packing_format_for_cpu", False):
        layer.state_dict()  # bitsandbytes restores its standard layout from the CPU kernel's when saving
    return dequantize_module_weight(layer).detach().float()


def dequantize(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every bitsandbytes linear layer of ``model`` by an ``nn.Linear`` with its dequantized weight, in place.

    State-dict keys stay the same (``...q_proj.weight``, ``...q_proj.bias``) and the quantization statistics
    (``weight.absmax``, ``weight.quant_map``, ...) disappear, so the result loads into the same part built
    without ``quantization``.

    Args:
        model: Any module.
        dtype: Weight dtype of the new layers; default: the layer's compute dtype (4-bit) or its bias dtype,
            else float32.

    Returns:
        ``model``, for chaining.
    """
    for name, layer in list(model.named_modules()):
        if name and quantized_kind(layer) is not None:
            model.set_submodule(name, plain_linear(layer, dequantized_weight(layer), dtype))
    return model


def plain_linear(layer: nn.Module, weight: torch.Tensor, dtype: torch.dtype | None = None) -> nn.Linear:
    """An ``nn.Linear`` holding ``weight`` ``[out, in]`` and the bias of the quantized ``layer``."""
    bias = getattr(layer, "bias", None)
    if dtype is None:
        dtype = getattr(layer, "compute_dtype", None) or (bias.dtype if bias is not None else torch.float32)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.requires_grad_(False)
    return linear


def quantize_linear_layers(
    module: nn.Module, quantization: Quantization, compute_dtype: torch.dtype, exclude: tuple[nn.Module, ...] = ()
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``module`` (but ``exclude``) by its bitsandbytes form, quantized from its weight.

    What ``from_pretrained`` with a ``BitsAndBytesConfig`` does while loading, for weights that were loaded another
    way (a strict import): 4-bit NF4/FP4 with double quantization, or LLM.int8(), on this process's own GPU
    (:func:`quantized_device_map`; the CPU without CUDA). Biases are kept in ``compute_dtype``.

    Args:
        module: The part whose linear layers are quantized (its weights loaded, not on ``meta``).
        quantization: ``"nf4"``, ``"fp4"`` or ``"int8"``.
        compute_dtype: Dtype of the 4-bit matmuls.
        exclude: Layers kept as they are (the output head, as transformers keeps ``lm_head``).

    Returns:
        ``module``, for chaining.

    Raises:
        ValueError: For an unknown scheme.
    """
    import bitsandbytes as bnb

    if quantization not in ("nf4", "fp4", "int8"):
        raise ValueError(f"quantization={quantization!r}; expected one of 'nf4', 'fp4', 'int8'")
    device = (quantized_device_map() or {"": torch.device("cpu")})[""]
    kept = {id(layer) for layer in exclude}
    for name, layer in list(module.named_modules()):
        if type(layer) is not nn.Linear or id(layer) in kept:
            continue
        shape = {"bias": layer.bias is not None, "device": "meta"}
        if quantization == "int8":
            quantized = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, has_fp16_weights=False, **shape)
            quantized.weight = bnb.nn.Int8Params(layer.weight.data, requires_grad=False, has_fp16_weights=False)
        else:
            quantized = bnb.nn.Linear4bit(
                layer.in_features,
                layer.out_features,
                compute_dtype=compute_dtype,
                compress_statistics=True,
                quant_type=quantization,
                **shape,
            )
            quantized.weight = bnb.nn.Params4bit(
                layer.weight.data, requires_grad=False, compress_statistics=True, quant_type=quantization
            )
        if layer.bias is not None:
            quantized.bias = nn.Parameter(layer.bias.data.to(compute_dtype), requires_grad=False)
        module.set_submodule(name, quantized.to(device))  # bitsandbytes quantizes as the weight moves
    keep_compute_dtype(module)
    return module
