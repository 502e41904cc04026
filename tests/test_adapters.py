import functools

import pytest
import torch
from tiny_models import build_tiny_vlm
from torch import nn

from vlmkit.adapters import (
    LoRA,
    has_adapters,
    load_trainable,
    merge_adapters,
    save_trainable,
    target_module_names,
    trainable_state_dict,
)
from vlmkit.data import SyntheticVQADataModule
from vlmkit.text.tokenizer import VLM_SPECIAL_TOKENS
from vlmkit.trainability import count_parameters


@pytest.fixture(scope="module")
def batch(tiny_vlm):
    dm = SyntheticVQADataModule(num_train=4, batch_size=4, min_size=16, max_size=40, max_image_size=40)
    dm.connect(tiny_vlm)
    return next(iter(dm.train_dataloader()))


def _logits(vlm, batch):
    return vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits


def _perturb_adapters(vlm, seed=1):
    """Give every adapter (LoRA B, DoRA magnitude, token deltas) non-zero values so it changes the function."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vlm.named_parameters():
            if p.requires_grad and ("lora_" in name or "trainable_rows" in name):
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def _block_linears(part):
    names = target_module_names(part, "all-block-linear")
    modules = dict(part.named_modules())
    return [modules[n] for n in names]


def test_frozen_language_model_trains_only_the_new_token_rows():
    vlm = build_tiny_vlm(train_language_model="frozen")
    trainable = {n: p for n, p in vlm.language_model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2  # input embedding rows and (untied) output rows
    assert all("trainable_rows" in n for n in trainable)
    assert all(p.shape == (len(VLM_SPECIAL_TOKENS), 64) for p in trainable.values())
    assert count_parameters(vlm.vision_encoder, trainable_only=True) == 0
    assert count_parameters(vlm.connector, trainable_only=True) == count_parameters(vlm.connector)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_tied_embeddings_share_one_trainable_row_per_new_token_merged_once(mode, batch):
    """A tied head's logit of a new token moves with its embedding, trained and merged alike (SmolVLM-style LMs)."""
    from tiny_models import TINY_LM, TINY_SIGLIP

    from vlmkit.connectors import PerceiverResampler
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    torch.manual_seed(0)
    lm = TransformersCausalLM(config={**TINY_LM, "tie_word_embeddings": True}, tokenizer="synthetic")
    connector = functools.partial(
        PerceiverResampler, num_latents=4, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
    )  # fmt: skip  (the batch's 4 tokens per image)
    encoder = TransformersVisionEncoder(config=TINY_SIGLIP, position_embedding="bucket")
    vlm = VisionLanguageModel(encoder, connector, lm, train_language_model=mode).eval()
    head, embeddings = lm.get_output_embeddings(), lm.get_input_embeddings()
    assert head.weight is embeddings.weight and head.trainable_rows.delta is embeddings.trainable_rows.delta
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad and "trainable_rows" in n]
    assert len(trainable) == 1  # one delta, counted once
    _perturb_adapters(vlm)
    with torch.no_grad():
        before = _logits(vlm, batch)
        merge_adapters(vlm)
        after = _logits(vlm, batch)
    assert head.weight is embeddings.weight and not has_adapters(vlm)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)  # merged into the shared weight exactly once


@pytest.mark.parametrize("rank", [2, 8])
def test_lora_adds_rank_times_in_plus_out_per_targeted_linear(rank):
    base = build_tiny_vlm(train_language_model="frozen", train_vision_encoder="frozen")
    vlm = build_tiny_vlm(train_language_model=LoRA(rank=rank), train_vision_encoder=LoRA(rank=rank))
    for part in ("vision_encoder", "language_model"):
        linears = _block_linears(getattr(base, part))
        added = sum(rank * (m.in_features + m.out_features) for m in linears)
        assert count_parameters(getattr(vlm, part)) == count_parameters(getattr(base, part)) + added
        assert count_parameters(getattr(vlm, part), True) == count_parameters(getattr(base, part), True) + added
    # defaults target attention and MLP projections of the blocks only: no head, no embedding
    names = target_module_names(base.language_model, "all-block-linear")
    assert names and all(".layers." in n for n in names) and not any("lm_head" in n for n in names)


def test_dora_adds_a_magnitude_per_output_and_computes_a_different_function(batch):
    lora = build_tiny_vlm(train_language_model="lora").eval()
    dora = build_tiny_vlm(train_language_model="dora").eval()
    linears = _block_linears(build_tiny_vlm().language_model)
    extra = count_parameters(dora.language_model, True) - count_parameters(lora.language_model, True)
    assert extra == sum(m.out_features for m in linears)
    _perturb_adapters(lora)
    _perturb_adapters(dora)  # same seed: same A, B and token deltas; DoRA also renormalises the direction
    with torch.no_grad():
        assert not torch.allclose(_logits(lora, batch), _logits(dora, batch), atol=1e-4)


def test_unknown_target_and_bad_settings_are_named():
    with pytest.raises(ValueError, match="match no linear layer"):
        build_tiny_vlm(train_language_model=LoRA(target_modules=["qproj"]))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoRA(rank=0)
    with pytest.raises(ValueError, match="train_language_model='half'"):
        build_tiny_vlm(train_language_model="half")


@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_merged_model_computes_the_adapted_function_without_peft(batch, mode):
    vlm = build_tiny_vlm(train_language_model=mode, train_vision_encoder=mode).eval()
    _perturb_adapters(vlm)
    with torch.no_grad():
        adapted = _logits(vlm, batch)
        merge_adapters(vlm)
        merged = _logits(vlm, batch)
    assert not has_adapters(vlm)
    torch.testing.assert_close(merged, adapted, atol=2e-5, rtol=1e-4)
    # the merged weights load into a plainly composed model (no peft layers, original keys)
    plain = build_tiny_vlm(seed=5, train_language_model="full", train_vision_encoder="full").eval()
    assert set(plain.state_dict()) == set(vlm.state_dict())
    plain.load_state_dict(vlm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(_logits(plain, batch), adapted, atol=2e-5, rtol=1e-4)


def test_saved_trainable_parameters_reproduce_the_logits_on_a_fresh_base(batch, tmp_path):
    trained = build_tiny_vlm(train_language_model="lora").eval()
    _perturb_adapters(trained)
    with torch.no_grad():
        nn.init.normal_(trained.connector.latents)  # new parameters are saved too
        expected = _logits(trained, batch)
    save_trainable(trained, tmp_path / "adapter.safetensors")
    fresh = build_tiny_vlm(train_language_model="lora").eval()
    with torch.no_grad():
        assert not torch.allclose(_logits(fresh, batch), expected, atol=1e-4)
    load_trainable(fresh, tmp_path / "adapter.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(_logits(fresh, batch), expected)
    keys = set(trainable_state_dict(trained))
    assert keys and all("lora_" in k or "trainable_rows" in k or k.startswith("connector.") for k in keys)
    other = build_tiny_vlm(train_language_model="dora")
    with pytest.raises(KeyError, match="adapter.safetensors.*missing"):
        load_trainable(other, tmp_path / "adapter.safetensors")


def test_a_lora_step_changes_only_adapters_new_rows_and_new_parameters(batch):
    from vlmkit.training.module import answer_loss

    vlm = build_tiny_vlm(train_language_model="lora", train_vision_encoder="lora").train()
    before = {k: v.clone() for k, v in vlm.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # B starts at 0: A only moves from the second step
        answer_loss(_logits(vlm, batch), batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = {k for k, v in vlm.state_dict().items() if not torch.equal(v, before[k])}
    trainable = set(trainable_state_dict(vlm))
    assert changed <= trainable
    assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)
    assert any("trainable_rows" in k for k in changed)
