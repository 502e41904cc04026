"""Finding a transformers causal LM's decoder layers by structure, for any family.

Families keep their decoder layers under different names (Llama ``model.layers``, GPT-2 and Falcon
``transformer.h``, OPT ``model.decoder.layers``, GPT-NeoX ``gpt_neox.layers``), so they are found by what they
are rather than where they live: the ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks of one class,
preferring the class transformers itself keeps whole when it splits a model across devices
(``_no_split_modules``) and, among equals, the list closest to the root (an MoE layer's experts sit deeper).
"""

from __future__ import annotations

import inspect

from torch import nn


def find_decoder_layers(model: nn.Module) -> str:
    """The qualified name (inside ``model``) of the ``nn.ModuleList`` holding its decoder layers, in order.

    Args:
        model: A transformers ``*ForCausalLM`` model.

    Returns:
        The name for ``model.get_submodule``, e.g. ``"model.layers"`` or ``"transformer.h"``.

    Raises:
        TypeError: Naming the model class, the expected number of layers and the lists found, when no
            ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks of a single class exists (e.g. hybrid models
            that alternate layer classes).
    """
    config = _text_config(model)
    expected = getattr(config, "num_hidden_layers", None)
    units = set(getattr(model, "_no_split_modules", None) or ())
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1
    ]
    matching = [(name, layers) for name, layers in found if expected is None or len(layers) == expected]
    if not matching:
        lists = [f"{name or '<root>'} ({len(m)} x {type(m[0]).__name__})" for name, m in found] or ["none"]
        raise TypeError(
            f"{type(model).__name__}: cannot find its decoder layers, an nn.ModuleList of "
            f"config.num_hidden_layers={expected} blocks of one class (found: {', '.join(lists)}); vlmkit supports "
            "causal LMs whose decoder layers are one such list (Llama, Mistral, Qwen2, Gemma, Phi, GPT-2, GPT-NeoX, "
            "OPT, Falcon, ...)"
        )

    def preference(item: tuple[str, nn.ModuleList]) -> tuple[bool, int, int]:
        name, layers = item
        return type(layers[0]).__name__ in units, len(layers), -name.count(".")

    return max(matching, key=preference)[0]


def packing_unsupported_reason(model: nn.Module, block_class: type[nn.Module]) -> str | None:
    """Why packed rows (restarting ``position_ids`` + a block-diagonal mask) would be wrong for ``model``; None if fine.

    ALiBi families (BLOOM, MPT, Falcon with ``alibi=True``) build their position bias from a 2-D padding mask and take
    no ``position_ids``: a packed row would be one long sequence to them. They are recognised by their decoder
    layers taking an ``alibi``/``position_bias`` argument while the config does not switch it off.
    """
    config = _text_config(model)
    parameters = inspect.signature(block_class.forward).parameters
    if ("alibi" in parameters or "position_bias" in parameters) and getattr(config, "alibi", True):
        return (
            "its ALiBi attention bias is built from a 2-D padding mask and ignores position_ids, so samples in a "
            "packed row would not restart their positions"
        )
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return "its forward takes no position_ids, so samples in a packed row cannot restart their positions"
    return None


def _text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config
