"""4-bit and 8-bit base weights through bitsandbytes, for quantized fine-tuning (QLoRA, Dettmers et al. 2023).

A part loaded with ``quantization`` keeps its linear layers in NF4/FP4 (with double quantization) or int8;
its other parameters and all adapters stay in the compute dtype. Quantized weights cannot be trained, so such a
part is declared ``frozen`` or ``lora``/``dora`` (which is QLoRA). Loading needs a checkpoint path: weights are
quantized as they are loaded.
"""

from __future__ import annotations

from typing import Literal

import torch

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
