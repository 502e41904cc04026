"""LoRA and DoRA adapters on pretrained parts, applied when the model is composed (peft underneath).

Paper Finding 3 / Table 3: unfreezing the backbones under the fully autoregressive architecture diverges;
LoRA on the backbones with full training of the new parameters is stable and better. Idefics2's instruction
tuning uses DoRA. An adapter is declared per part (``train_language_model: lora``); the layers it wraps default
to every linear layer inside the part's repeated blocks (attention and MLP projections), so no per-model name
lists are needed. Adapters merge back into plain weights for export (:func:`merge_adapters`), or are saved alone
(:func:`save_trainable`) and loaded onto a freshly composed model (:func:`load_trainable`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from vlmkit.quantization import dequantized_weight, plain_linear, quantized_kind

ALL_BLOCK_LINEAR = "all-block-linear"
"""Default targets: every ``nn.Linear`` inside the part's repeated blocks (attention and MLP projections)."""
ALL_LINEAR = "all-linear"
"""Every ``nn.Linear`` of the part (output heads included)."""


class LoRA:
    """Low-rank adapters (Hu et al. 2021) or, with ``use_dora``, weight-decomposed ones (DoRA, Liu et al. 2024).

    ``W x + (alpha / rank) * B A x`` with ``B = 0`` at init, so an adapted part starts exactly as the pretrained one.

    Args:
        rank: Rank ``r`` of ``A [r, in]`` and ``B [out, r]``.
        alpha: Scale numerator; the update is scaled by ``alpha / rank``.
        dropout: Dropout on the adapter's input.
        target_modules: ``"all-block-linear"`` (linear layers inside the part's repeated blocks), ``"all-linear"``,
            or module-name suffixes such as ``["q_proj", "v_proj"]``.
        use_dora: Decompose into magnitude and direction (DoRA); Idefics2's instruction tuning uses it.

    Example:
        >>> VisionLanguageModel(encoder, connector, lm, train_language_model=LoRA(rank=16, alpha=32))  # doctest: +SKIP
    """

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.05,
        target_modules: str | list[str] = ALL_BLOCK_LINEAR,
        use_dora: bool = False,
    ) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.target_modules = target_modules
        self.use_dora = use_dora

    def __repr__(self) -> str:
        kind = "DoRA" if self.use_dora else "LoRA"
        return f"{kind}(rank={self.rank}, alpha={self.alpha}, dropout={self.dropout}, targets={self.target_modules!r})"


def _linear_types() -> tuple[type[nn.Module], ...]:
    """Layer types LoRA adapts: ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2's transposed linear layers)."""
    from transformers.pytorch_utils import Conv1D

    return nn.Linear, Conv1D


def target_module_names(module: nn.Module, targets: str | Sequence[str]) -> list[str]:
    """Qualified names of the linear layers (``nn.Linear``, GPT-2's ``Conv1D``) of ``module`` that ``targets`` selects.

    Raises:
        ValueError: If nothing matches (a misspelt suffix would otherwise train nothing).
    """
    types = _linear_types()
    linear = {name: m for name, m in module.named_modules() if isinstance(m, types) and name}
    if targets == ALL_LINEAR:
        names = list(linear)
    elif targets == ALL_BLOCK_LINEAR:
        block = getattr(module, "block_class", None)
        roots = [n for n, m in module.named_modules() if isinstance(block, type) and isinstance(m, block)]
        if not roots:
            raise ValueError(f"{type(module).__name__} declares no block_class; give LoRA target_modules explicitly")
        names = [n for n in linear if any(n.startswith(root + ".") for root in roots)]
    else:
        suffixes = [targets] if isinstance(targets, str) else list(targets)
        names = [n for n in linear if any(n == s or n.endswith("." + s) for s in suffixes)]
    if not names:
        raise ValueError(f"LoRA target_modules={targets!r} match no linear layer of {type(module).__name__}")
    return names


def inject_lora(module: nn.Module, settings: LoRA, trainable_tokens: dict[str, list[int]] | None = None) -> None:
    """Freeze ``module`` and add trainable LoRA/DoRA layers to it in place.

    Args:
        module: A pretrained part (its state-dict keys of wrapped layers become ``...base_layer.weight``).
        settings: Rank, alpha, dropout, targets, DoRA.
        trainable_tokens: Embedding or output-layer names (relative to ``module``) mapped to the token rows
            that train (the VLM's added special tokens; see :class:`TrainableRows`).
    """
    from peft import LoraConfig, inject_adapter_in_model

    module.requires_grad_(False)
    names = target_module_names(module, settings.target_modules)
    conv1d = _linear_types()[1]
    transposed = any(isinstance(module.get_submodule(name), conv1d) for name in names)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=names,
        use_dora=settings.use_dora,
        fan_in_fan_out=transposed,  # Conv1D stores [in, out]; peft sets it per layer where both kinds are targeted
    )
    with warnings.catch_warnings(), _quantization_visible(module):
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")  # peft's per-layer correction
        inject_adapter_in_model(config, module)
    if trainable_tokens:
        add_trainable_rows(module, trainable_tokens)


@contextlib.contextmanager
def _quantization_visible(module: nn.Module) -> Iterator[None]:
    """Show peft that ``module`` holds bitsandbytes layers while it injects adapters.

    peft wraps a 4-bit/8-bit layer in its bitsandbytes LoRA layer (which dequantizes for DoRA and merging) only when
    the model it is given says ``is_loaded_in_4bit``/``is_loaded_in_8bit``, flags transformers puts on its own model.
    A vlmkit part wraps that model, so the flags are set on the part for the injection, and removed after.
    """
    kinds = {quantized_kind(m) for m in module.modules()} - {None}
    added = [f"is_loaded_in_{kind}" for kind in sorted(kinds) if not getattr(module, f"is_loaded_in_{kind}", False)]
    for flag in added:
        setattr(module, flag, True)
    try:
        yield
    finally:
        for flag in added:
            delattr(module, flag)


class TrainableRows(nn.Module):
    """Trainable deltas for some rows of a frozen embedding ``[vocab, d]`` or output layer ``[vocab, d]``.

    Attached as a child of the layer (state-dict key ``<layer>.trainable_rows.delta``, the layer's own keys
    unchanged) with a forward hook that adds ``delta`` to those rows' outputs: the embedding of a new token,
    or its logit. :func:`merge_adapters` folds the deltas into the weight.

    A tied output head (its weight is the embeddings') shares the embeddings' ``delta``: a new token's row is one
    vector, used as its embedding and for its logit, before and after merging.

    Args:
        layer: An ``nn.Embedding`` (input) or ``nn.Linear`` (output head) with one row per token.
        token_ids: The rows that train (the VLM's added special tokens).
        delta: The ``delta`` of the layer whose weight ``layer`` shares (tied embeddings); ``None``: its own.
    """

    def __init__(self, layer: nn.Module, token_ids: Sequence[int], delta: nn.Parameter | None = None) -> None:
        super().__init__()
        rows = sorted(set(int(t) for t in token_ids))
        if rows and rows[-1] >= layer.weight.shape[0]:
            raise ValueError(f"token id {rows[-1]} is outside the layer's {layer.weight.shape[0]} rows")
        ids = torch.tensor(rows, dtype=torch.long)
        self.register_buffer("token_ids", ids, persistent=False)
        lookup = torch.full((layer.weight.shape[0],), -1, dtype=torch.long)
        lookup[ids] = torch.arange(len(ids))
        self.register_buffer("lookup", lookup, persistent=False)  # token id -> row of delta, -1 elsewhere
        if delta is None:
            delta = nn.Parameter(torch.zeros(len(ids), layer.weight.shape[1], dtype=layer.weight.dtype))
        elif tuple(delta.shape) != (len(ids), layer.weight.shape[1]):
            raise ValueError(f"a shared delta {tuple(delta.shape)} does not fit {len(ids)} rows of {layer}")
        self.delta = delta
        self.is_embedding = isinstance(layer, nn.Embedding)

    def forward(self, layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        """The layer's output with the delta rows added (``[..., d]`` embeddings or ``[..., vocab]`` logits)."""
        if self.is_embedding:
            rows = self.lookup[layer_input]  # [...]
            delta = torch.cat([self.delta, self.delta.new_zeros(1, self.delta.shape[1])])[rows]  # -1 -> zero row
            return layer_output + delta.to(layer_output.dtype)
        extra = layer_input @ self.delta.to(layer_input.dtype).T  # [..., k]
        return layer_output.index_add(-1, self.token_ids, extra.to(layer_output.dtype))

    def merge_into(self, layer: nn.Module) -> None:
        """Add the deltas to the layer's weight rows."""
        with torch.no_grad():
            layer.weight[self.token_ids] += self.delta.to(layer.weight.dtype)


def add_trainable_rows(module: nn.Module, trainable_tokens: dict[str, list[int]]) -> None:
    """Give the named embedding/output layers of ``module`` trainable rows for ``trainable_tokens`` (in place).

    Layers sharing one weight (tied embeddings) share one ``delta``.
    """
    deltas: dict[int, nn.Parameter] = {}  # id(weight) -> its delta
    for name, token_ids in trainable_tokens.items():
        layer = module.get_submodule(name)
        layer.trainable_rows = TrainableRows(layer, token_ids, deltas.get(id(layer.weight)))
        deltas[id(layer.weight)] = layer.trainable_rows.delta
        layer.register_forward_hook(_add_rows, with_kwargs=False)


def _add_rows(layer: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    rows = getattr(layer, "trainable_rows", None)  # gone after merge_adapters: the hook is then a no-op
    return output if rows is None else rows(args[0], output)


def has_adapters(model: nn.Module) -> bool:
    """Whether any adapter (LoRA/DoRA layer, trainable token rows) is inside ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, (BaseTunerLayer, TrainableRows)) for m in model.modules())


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weights and unwrap it, in place.

    Afterwards the model holds plain ``nn.Linear``/``nn.Embedding`` layers with the original state-dict keys,
    computes the same function, and loads without peft. An adapter on a quantized (bitsandbytes) layer is merged
    into a float32 dequantized copy of its weight, and the layer becomes a plain ``nn.Linear`` (QLoRA export;
    re-quantizing the sum would lose the adapter's update to rounding).

    Returns:
        ``model``, for chaining.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged: set[tuple[int, int]] = set()  # (weight, delta): a tied head's rows are the embeddings' rows
    for child in list(model.modules()):
        rows = child._modules.get("trainable_rows")
        if isinstance(rows, TrainableRows):
            if (id(child.weight), id(rows.delta)) not in merged:
                rows.merge_into(child)
                merged.add((id(child.weight), id(rows.delta)))
            del child.trainable_rows
    for name, child in list(model.named_modules()):
        if isinstance(child, BaseTunerLayer) and name:
            if quantized_kind(child.get_base_layer()) is not None:
                model.set_submodule(name, _merge_into_dequantized(child))
                continue
            child.merge()
            model.set_submodule(name, child.get_base_layer())
    return model


def _merge_into_dequantized(layer: nn.Module) -> nn.Linear:
    """A plain ``nn.Linear`` computing what the LoRA/DoRA ``layer`` over a bitsandbytes linear layer computes.

    LoRA: ``W + (alpha / r) B A``; DoRA: ``m / ||W + (alpha / r) B A||_row * (W + (alpha / r) B A)``, with ``W`` the
    dequantized base weight, all in float32; the result takes the layer's compute dtype.
    """
    base = layer.get_base_layer()
    weight = dequantized_weight(base)  # [out, in]
    for adapter in layer.active_adapters:
        if adapter not in layer.lora_A:
            continue
        delta = layer.get_delta_weight(adapter).float()  # [out, in], scaling included
        magnitude = getattr(layer, "lora_magnitude_vector", {})
        if adapter in magnitude:  # DoRA
            norm = torch.linalg.norm(weight + delta, dim=1)  # [out]
            weight = (magnitude[adapter].weight.float() / norm)[:, None] * (weight + delta)
        else:
            weight = weight + delta
    return plain_linear(base, weight)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of all trainable parameters (adapters and new parameters), keyed as in ``model.state_dict()``."""
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    state = model.state_dict(keep_vars=True)
    return {k: v.detach() for k, v in state.items() if id(v) in trainable}


def save_trainable(model: nn.Module, path: str | os.PathLike) -> None:
    """Save only the trainable parameters (adapters, connector, fusion blocks, new token rows) as safetensors."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainable_state_dict(model).items()}, os.fspath(path))


def load_trainable(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a :func:`save_trainable` file into a model composed the same way (same adapters).

    Raises:
        KeyError: If the file and the model's trainable parameters differ (both sets of names shown).
    """
    from safetensors.torch import load_file

    state = load_file(os.fspath(path))
    expected = set(trainable_state_dict(model))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise KeyError(
            f"{os.fspath(path)}: trainable parameters differ; missing {missing[:8]}, unexpected "
            f"{unexpected[:8]} (was the model composed with the same adapters?)"
        )
    model.load_state_dict(state, strict=False)
