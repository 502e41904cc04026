"""A part written from its Protocol alone works: CONTRIBUTING.md, "Add a part", step by step.

Each class below is a third-party part of one kind, written from ``vlmkit/interfaces.py`` only: a plain ``nn.Module``
with the Protocol's members, no vlmkit base class (the language model wraps a tiny transformers causal LM, the scope
vlmkit supports, but implements every member itself). Each is checked against its Protocol (step 2), swapped into a
``VisionLanguageModel`` and trained one optimizer step by a ``VLMModule`` under a Lightning ``Trainer`` on plain
batches from ``VLMProcessor`` + ``VLMCollator`` (step 3): its weights move and the loss is finite.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import lightning as L
import pytest
import torch
from PIL import Image
from torch import nn

from vlmkit.interfaces import Connector, Fusion, LanguageModel, LanguageModelOutput, VisionEncoder

PATCH = 8

# ---------------------------------------------------------------------------------------------------- the parts


class PatchLinearEncoder(nn.Module):
    """A ``VisionEncoder``: one linear map of each patch's pixels (padding cannot reach a real patch)."""

    def __init__(self, hidden_size: int = 32, patch_size: int = PATCH) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.patch_size = patch_size
        self.image_mean = (0.5, 0.5, 0.5)
        self.image_std = (0.5, 0.5, 0.5)
        self.quantization = None
        self.proj = nn.Linear(3 * patch_size * patch_size, hidden_size)

    @property
    def block_class(self) -> type[nn.Module] | None:
        return None

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        p = self.patch_size
        patches = pixel_values.unfold(2, p, p).unfold(3, p, p)  # [n, 3, rows, cols, p, p]
        patches = patches.permute(0, 2, 3, 1, 4, 5).flatten(3).flatten(1, 2)  # [n, rows*cols, 3*p*p]
        return self.proj(patches)  # [n, p, hidden_size]


class MeanPoolConnector(nn.Module):
    """A ``Connector``: the mean of an image's real patches, projected to ``num_tokens`` visual tokens."""

    def __init__(self, in_dim: int, out_dim: int, num_tokens: int = 2) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num_tokens = in_dim, out_dim, num_tokens
        self.proj = nn.Linear(in_dim, out_dim * num_tokens)

    @property
    def block_class(self) -> type[nn.Module] | None:
        return None

    def num_visual_tokens(self, num_patches: int) -> int:
        return self.num_tokens

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        weights = torch.ones_like(features[..., :1]) if mask is None else mask[..., None].to(features.dtype)
        mean = (features * weights).sum(1) / weights.sum(1).clamp(min=1)  # [n, in_dim]
        return self.proj(mean).view(features.shape[0], self.num_tokens, self.out_dim)  # [n, v, out_dim]


class PooledTokenFusion(nn.Module):
    """A ``Fusion``: one ``<image>`` token per image, holding the scaled mean of its visual tokens."""

    supports_packing = False

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    @property
    def block_class(self) -> type[nn.Module] | None:
        return None

    def bind(self, language_model: LanguageModel, visual_dim: int) -> None:
        if visual_dim != language_model.hidden_size:
            raise ValueError(f"visual tokens of width {visual_dim} for an LM of width {language_model.hidden_size}")

    def tokens_per_image(self, num_visual_tokens: int) -> int:
        return 1

    def forward(
        self,
        language_model: LanguageModel,
        inputs_embeds: torch.Tensor,
        image_token_mask: torch.Tensor,
        visual_tokens: torch.Tensor | None,
        visual_mask: torch.Tensor | None = None,
        **lm_kwargs: Any,
    ) -> LanguageModelOutput:
        if visual_tokens is not None:
            weights = torch.ones_like(visual_tokens[..., :1]) if visual_mask is None else visual_mask[..., None]
            pooled = (visual_tokens * weights).sum(1) / weights.sum(1).clamp(min=1)  # [n, d]
            mask = image_token_mask.unsqueeze(-1).expand_as(inputs_embeds)  # [b, s, d]
            inputs_embeds = inputs_embeds.masked_scatter(mask, (self.scale * pooled).to(inputs_embeds.dtype))
        return language_model(inputs_embeds=inputs_embeds, **lm_kwargs)


class TinyLlama(nn.Module):
    """A ``LanguageModel``: a tiny transformers Llama behind the Protocol, owning a tokenizer with the VLM tokens."""

    supports_packing = False

    def __init__(self, hidden_size: int = 32) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        from vlmkit.text import add_vlm_special_tokens, build_synthetic_tokenizer

        self.tokenizer = add_vlm_special_tokens(build_synthetic_tokenizer())
        config = LlamaConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
        self.model = LlamaForCausalLM(config)
        self.hidden_size = hidden_size
        self.quantization = None
        self._cache_argument = (
            "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        )

    @property
    def block_class(self) -> type[nn.Module] | None:
        return type(self.model.model.layers[0])

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        return self.model.get_output_embeddings()

    def decoder_layers(self) -> nn.ModuleList:
        return self.model.model.layers

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        segment_ids: torch.Tensor | None = None,
    ) -> LanguageModelOutput:
        if segment_ids is not None:
            raise ValueError("TinyLlama does not support packed rows")
        out = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{self._cache_argument: cache},
        )
        out.cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return out


# --------------------------------------------------------------------------------------------- vlmkit's own parts


def vlmkit_parts() -> dict[str, Any]:
    from tiny_models import TINY_LM, TINY_SIGLIP

    from vlmkit.connectors import PerceiverResampler
    from vlmkit.fusion import FullyAutoregressiveFusion
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.vision import TransformersVisionEncoder

    return {
        "vision_encoder": TransformersVisionEncoder(config=TINY_SIGLIP),
        "connector": functools.partial(
            PerceiverResampler, num_latents=4, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
        ),
        "language_model": TransformersCausalLM(config=TINY_LM, tokenizer="synthetic"),
        "fusion": FullyAutoregressiveFusion(),
    }


THIRD_PARTY = {
    "vision_encoder": (PatchLinearEncoder, VisionEncoder),
    "connector": (MeanPoolConnector, Connector),
    "fusion": (PooledTokenFusion, Fusion),
    "language_model": (TinyLlama, LanguageModel),
}


def compose(**swapped: Any):
    from vlmkit.model import VisionLanguageModel

    torch.manual_seed(0)
    parts = {**vlmkit_parts(), **swapped}
    return VisionLanguageModel(**parts, train_vision_encoder="full", train_language_model="full")


def batches(vlm, num_batches: int = 2) -> list[dict[str, Any]]:
    """Collated training batches of two one-turn conversations each, from the model's own processor."""
    from vlmkit.data import VLMCollator, VLMProcessor
    from vlmkit.text import Turn

    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    collate = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size)
    made = []
    for b in range(num_batches):
        items = [
            processor(
                [Image.new("RGB", (16 + 8 * b, 24), color)],
                [Turn("user", [{"type": "image"}, "Color?"]), Turn("assistant", [name])],
            )  # fmt: skip
            for color, name in (((200, 0, 0), "red"), ((0, 0, 200), "blue"))
        ]
        made.append(collate(items))
    return made


def train_one_step(vlm) -> float:
    from vlmkit.training import VLMModule

    module = VLMModule(vlm, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(batches(vlm), batch_size=None))
    return float(trainer.callback_metrics["train/loss"])


# -------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", sorted(THIRD_PARTY))
def test_a_part_written_from_its_protocol_is_one(kind):
    part_class, protocol = THIRD_PARTY[kind]
    part = part_class(32, 32) if kind == "connector" else part_class()
    assert isinstance(part, protocol) and isinstance(part, nn.Module)
    assert not any(cls.__module__.startswith("vlmkit") for cls in type(part).__mro__)  # no vlmkit base class
    others = {name: protocol for name, (_, protocol) in THIRD_PARTY.items() if protocol is not THIRD_PARTY[kind][1]}
    assert not any(isinstance(part, other) for other in others.values())


@pytest.mark.parametrize("kind", sorted(THIRD_PARTY))
def test_a_third_party_part_trains_inside_a_vlmkit_model(kind):
    part_class = THIRD_PARTY[kind][0]
    vlm = compose(**{kind: part_class if kind == "connector" else part_class()})  # a connector is given as a factory
    part = getattr(vlm, kind)
    assert isinstance(part, THIRD_PARTY[kind][1])
    before = {name: p.detach().clone() for name, p in part.named_parameters()}
    assert before, f"the {kind} has weights to train"
    loss = train_one_step(vlm)
    assert torch.isfinite(torch.tensor(loss))
    assert all(not torch.equal(p, before[name]) for name, p in part.named_parameters())
    # and it answers: generation runs every part, with the cache the LM returns
    prompt = batches(vlm, 1)[0]
    ids = vlm.eval().generate(prompt["input_ids"][:1, :-2], None, prompt["pixel_values"][:1],
                              prompt["patch_mask"][:1], max_new_tokens=3)  # fmt: skip
    assert ids.shape[0] == 1 and 1 <= ids.shape[1] <= 3


def test_all_four_third_party_parts_together_train_with_lora_on_the_lm():
    from vlmkit.model import VisionLanguageModel

    torch.manual_seed(0)
    vlm = VisionLanguageModel(
        PatchLinearEncoder(),
        MeanPoolConnector,
        TinyLlama(),
        PooledTokenFusion(),
        train_vision_encoder="full",
        train_language_model="lora",  # LoRA finds the linear layers inside the declared block_class
    )
    adapters = {n: p.detach().clone() for n, p in vlm.language_model.named_parameters() if "lora_B" in n}
    assert adapters
    assert torch.isfinite(torch.tensor(train_one_step(vlm)))
    assert any(not torch.equal(p, adapters[n]) for n, p in vlm.language_model.named_parameters() if n in adapters)
    assert not vlm.supports_packing  # declared by the fusion and the LM, not inferred from their classes


def test_vlmkit_uses_nothing_of_a_part_beyond_its_protocol():
    """Every attribute vlmkit's code reads on a part (composing, training, processing data, generating) is a member
    of the part's Protocol or of ``nn.Module``: the contract is the whole story."""
    import sys
    import typing
    from collections import defaultdict

    from vlmkit.data import MixtureDataModule
    from vlmkit.model import VisionLanguageModel

    used: dict[str, set[str]] = defaultdict(set)

    def recorded(part_class: type) -> type:
        def __getattribute__(self, name: str):  # noqa: N807
            if sys._getframe(1).f_globals.get("__name__", "").startswith("vlmkit."):
                used[part_class.__name__].add(name)
            return part_class.__getattribute__(self, name)

        return type(part_class.__name__, (part_class,), {"__getattribute__": __getattribute__})

    torch.manual_seed(0)
    vlm = VisionLanguageModel(
        recorded(PatchLinearEncoder)(),
        recorded(MeanPoolConnector),
        recorded(TinyLlama)(),
        recorded(PooledTokenFusion)(),
        train_vision_encoder="full",
        train_language_model="lora",
    )
    train_one_step(vlm)
    prompt = batches(vlm, 1)[0]
    vlm.eval().generate(prompt["input_ids"][:1, :-2], None, prompt["pixel_values"][:1], max_new_tokens=2)
    with pytest.raises(ValueError, match="PooledTokenFusion and TinyLlama declare supports_packing=False"):
        MixtureDataModule(pack_length=2048).connect(vlm)  # packing is asked of the parts' declarations
    from vlmkit.fusion import CrossAttentionFusion

    crossed = VisionLanguageModel(  # the LM under vlmkit's other fusion: its decoder layers get blocks
        PatchLinearEncoder(), MeanPoolConnector, recorded(TinyLlama)(), CrossAttentionFusion(1, 4, gate_init=0.5)
    )
    train_one_step(crossed)
    module_api = set(dir(nn.Module))
    members = getattr(typing, "_get_protocol_attrs", lambda p: p.__protocol_attrs__)
    for part_class, protocol in THIRD_PARTY.values():
        reads = used[part_class.__name__]
        assert reads, f"vlmkit read nothing of {part_class.__name__}"
        beyond = reads - module_api - set(members(protocol))
        assert not beyond, f"vlmkit reads {sorted(beyond)} of a {protocol.__name__}, which its Protocol does not name"
    assert {"decoder_layers", "supports_packing", "tokenizer", "get_output_embeddings"} <= used["TinyLlama"]


def test_vlmkits_own_parts_satisfy_their_protocols(tiny_vlm):
    import functools

    from tiny_models import TINY_LM

    from vlmkit.connectors import LinearProjection, MappingNetwork, MLPProjection, PixelShuffleConnector
    from vlmkit.fusion import CrossAttentionFusion
    from vlmkit.interfaces import GridConnector
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.vision import TimmVisionEncoder

    timm = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    assert isinstance(tiny_vlm.vision_encoder, VisionEncoder)
    assert isinstance(TimmVisionEncoder("vit_tiny_patch16_224", model_kwargs=timm), VisionEncoder)
    connectors = [tiny_vlm.connector, LinearProjection(32, 32, 16, 4), MappingNetwork(32, 32), MLPProjection(32, 32)]
    assert all(isinstance(c, Connector) and not isinstance(c, GridConnector) for c in connectors)
    assert isinstance(functools.partial(PixelShuffleConnector, scale_factor=2)(32, 32), GridConnector)
    assert isinstance(tiny_vlm.fusion, Fusion) and isinstance(CrossAttentionFusion(), Fusion)
    assert isinstance(tiny_vlm.language_model, LanguageModel)
    assert isinstance(TransformersCausalLM(config=TINY_LM, tokenizer="synthetic"), LanguageModel)
