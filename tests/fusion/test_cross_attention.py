import functools

import pytest
import torch
from PIL import Image
from tiny_models import build_tiny_vlm, uncached_greedy

from vlmkit.connectors import PerceiverResampler
from vlmkit.data import VLMCollator, VLMProcessor
from vlmkit.fusion import CrossAttentionFusion
from vlmkit.text import Turn

CONNECTOR = functools.partial(
    PerceiverResampler, num_latents=3, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
)


def build(media_masking="preceding", open_gates=False):
    vlm = build_tiny_vlm(
        connector=CONNECTOR, fusion=CrossAttentionFusion(every_n_layers=1, num_heads=4, media_masking=media_masking)
    ).eval()
    if open_gates:
        with torch.no_grad():
            for block in vlm.fusion.blocks:
                block.attn_gate.fill_(1.0)
                block.ff_gate.fill_(1.0)
    return vlm


def batch_for(vlm, images):
    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    turns = [
        Turn("user", ["before", {"type": "image"}, "middle", {"type": "image"}, "after?"]),
        Turn("assistant", ["ok"]),
    ]
    return VLMCollator(vlm.tokenizer.pad_token_id, 8)([processor(images, turns)])


IMAGES = [Image.new("RGB", (24, 16), (200, 0, 0)), Image.new("RGB", (16, 32), (0, 0, 200))]


def logits(vlm, batch, pixel_values=None):
    pixels = batch["pixel_values"] if pixel_values is None else pixel_values
    return vlm(batch["input_ids"], batch["attention_mask"], pixels, batch["patch_mask"]).logits[0]


def test_closed_gates_give_exactly_the_language_model():
    vlm = build()
    batch = batch_for(vlm, IMAGES)
    assert int((batch["input_ids"] == vlm.image_token_id).sum()) == 2  # one marker per image
    plain = vlm.language_model(inputs_embeds=vlm.language_model.get_input_embeddings()(batch["input_ids"])).logits[0]
    assert torch.equal(logits(vlm, batch), plain)


def test_open_gate_init_lets_gradients_reach_the_visual_path():
    """With closed gates (Flamingo) the encoder and connector get exactly zero gradient at the first step."""
    grads = {}
    for gate_init in (0.0, 0.5):
        vlm = build_tiny_vlm(
            connector=CONNECTOR, fusion=CrossAttentionFusion(every_n_layers=1, num_heads=4, gate_init=gate_init)
        )
        assert all(b.attn_gate.item() == b.ff_gate.item() == gate_init for b in vlm.fusion.blocks)
        logits(vlm, batch_for(vlm, IMAGES)).square().mean().backward()
        grads[gate_init] = sum(float(p.grad.abs().sum()) for p in vlm.connector.parameters() if p.grad is not None)
    assert grads[0.0] == 0.0 and grads[0.5] > 0.0


@pytest.mark.parametrize("mode", ["preceding", "all_preceding"])
def test_media_masking(mode):
    """What each text token reads through cross-attention (the first block, before any self-attention)."""
    vlm = build(mode, open_gates=True)
    batch = batch_for(vlm, IMAGES)
    markers = (batch["input_ids"][0] == vlm.image_token_id).nonzero().flatten().tolist()
    seen = []
    handle = vlm.fusion.blocks[0].register_forward_hook(lambda module, args, out: seen.append(out[0][0].detach()))
    changed_second = batch["pixel_values"].clone()
    changed_second[1] = torch.randn_like(changed_second[1])
    changed_first = batch["pixel_values"].clone()
    changed_first[0] = torch.randn_like(changed_first[0])
    full_logits = [logits(vlm, batch, pixels) for pixels in (None, changed_second, changed_first)]
    handle.remove()
    base, second, first = seen
    before, between, after = slice(None, markers[0]), slice(markers[0], markers[1]), slice(markers[1], None)
    for other in (second, first):  # text before the first image reads nothing: unchanged
        assert torch.equal(base[before], other[before])
        assert torch.equal(full_logits[0][before], full_logits[1][before])
    assert not torch.allclose(base[after], second[after], atol=1e-4)  # text after image 2 reads image 2
    assert torch.equal(base[between], second[between])  # text between the images does not read image 2
    assert not torch.allclose(base[between], first[between], atol=1e-4)  # ... but image 1
    if mode == "preceding":
        assert torch.equal(base[after], first[after])  # only the image just before it
    else:
        assert not torch.allclose(base[after], first[after], atol=1e-4)  # every image before it
    assert not torch.allclose(full_logits[0][after], full_logits[1][after], atol=1e-4)


def test_language_model_keys_are_kept_and_blocks_get_their_own():
    from tiny_models import TINY_LM

    from vlmkit.llm import TransformersCausalLM

    torch.manual_seed(0)
    original = TransformersCausalLM(config=TINY_LM, tokenizer="synthetic").state_dict()
    vlm = build()
    state = vlm.state_dict()
    lm_state = {k[len("language_model.") :]: v for k, v in state.items() if k.startswith("language_model.")}
    assert set(lm_state) >= set(original)
    # a pretrained LM checkpoint loads unchanged; only the new tokens' trainable rows are added keys
    missing, unexpected = vlm.language_model.load_state_dict(original, strict=False)
    assert not unexpected
    assert set(missing) == {"model.model.embed_tokens.trainable_rows.delta", "model.lm_head.trainable_rows.delta"}
    assert all(torch.equal(vlm.language_model.state_dict()[k], v) for k, v in original.items())
    fusion_keys = {k for k in state if k.startswith("fusion.blocks.")}
    assert len(vlm.fusion.blocks) == 2 and any(k.endswith("attn_gate") for k in fusion_keys)
    state = vlm.state_dict()
    reloaded = build()
    reloaded.load_state_dict(state)
    assert all(torch.equal(reloaded.state_dict()[k], v) for k, v in state.items())


def test_cached_generation_equals_uncached_loop():
    vlm = build(open_gates=True)
    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    items = [
        processor([IMAGES[i]], [Turn("user", [{"type": "image"}, "q" * (i + 1)])], add_generation_prompt=True)
        for i in range(2)
    ]
    batch = VLMCollator(vlm.tokenizer.pad_token_id, 8, padding_side="left")(items)
    generated = vlm.generate(
        batch["input_ids"],
        batch["attention_mask"],
        batch["pixel_values"],
        batch["patch_mask"],
        max_new_tokens=4,
        stop_token_ids=[],
    )
    assert torch.equal(generated, uncached_greedy(vlm, batch, 4))


def mixed_prompts(vlm):
    """A text-only prompt, text before an image, and an image first (prompts for generation)."""
    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    contents = [
        ([], ["What", "is", "a", "shape?"]),
        ([IMAGES[0]], ["Look", "here:", {"type": "image"}, "which colour?"]),
        ([IMAGES[1]], [{"type": "image"}, "q"]),
    ]
    return [processor(images, [Turn("user", content)], add_generation_prompt=True) for images, content in contents]


def left_padded(vlm, items):
    batch = VLMCollator(vlm.tokenizer.pad_token_id, 8, padding_side="left")(items)
    batch["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    return batch


def real_logits(vlm, batch):
    """Logits of the real (non-padding) tokens of every row ``[(n_i, vocab)]``."""
    out = vlm(
        batch["input_ids"],
        batch["attention_mask"],
        batch.get("pixel_values"),
        batch.get("patch_mask"),
        position_ids=batch["position_ids"],
    ).logits
    return [row[mask.bool()] for row, mask in zip(out, batch["attention_mask"])]


@pytest.mark.parametrize("mode", ["preceding", "all_preceding"])
def test_a_row_gives_the_same_result_alone_and_batched(mode):
    """Tokens that see no image pass every block unchanged (mllama's full-text-row mask), with non-zero gates."""
    vlm = build(mode, open_gates=True)
    items = mixed_prompts(vlm)
    batch = left_padded(vlm, items)
    with torch.no_grad():
        batched = real_logits(vlm, batch)
        alone = [real_logits(vlm, left_padded(vlm, [item]))[0] for item in items]
        lm = [vlm.language_model(inputs_embeds=vlm.language_model.get_input_embeddings()(item["input_ids"][None]))
              for item in items]  # fmt: skip
    for row, expected in zip(batched, alone):
        torch.testing.assert_close(row, expected, atol=1e-5, rtol=1e-5)
    first_image = [(item["input_ids"] == vlm.image_token_id).nonzero().flatten() for item in items]
    text_only, image_second = lm[0].logits[0], lm[1].logits[0, : int(first_image[1][0])]
    torch.testing.assert_close(batched[0], text_only, atol=1e-5, rtol=1e-5)  # no image: exactly the LM
    torch.testing.assert_close(batched[1][: len(image_second)], image_second, atol=1e-5, rtol=1e-5)  # text before it
    assert not torch.allclose(batched[2], lm[2].logits[0], atol=1e-3)  # ... while the images are read
    generated = vlm.generate(
        batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"],
        max_new_tokens=4, stop_token_ids=[],
    )  # fmt: skip
    for item, row in zip(items, generated):
        one = left_padded(vlm, [item])
        alone_ids = vlm.generate(
            one["input_ids"], one["attention_mask"], one.get("pixel_values"), one.get("patch_mask"),
            max_new_tokens=4, stop_token_ids=[],
        )  # fmt: skip
        assert torch.equal(row, alone_ids[0])
    # the mixed batch also decodes as the uncached reference loop (new tokens after an image still read it)
    assert torch.equal(generated, uncached_greedy(vlm, batch, 4))


def test_rows_without_images_give_the_blocks_no_gradient():
    vlm = build(open_gates=True).train()
    batch = left_padded(vlm, mixed_prompts(vlm))
    logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"],
                 position_ids=batch["position_ids"]).logits  # fmt: skip
    logits[0].square().mean().backward()  # the text-only row's loss
    grads = [p.grad for p in vlm.fusion.blocks.parameters()]
    assert all(g is None or not g.any() for g in grads)
    vlm.zero_grad()
    logits = vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"],
                 position_ids=batch["position_ids"]).logits  # fmt: skip
    logits[2].square().mean().backward()  # a row with an image trains them
    assert all(p.grad is not None and p.grad.any() for p in vlm.fusion.blocks.parameters())


def test_marker_count_mismatch_and_bad_arguments():
    vlm = build()
    batch = batch_for(vlm, IMAGES)
    with pytest.raises(ValueError, match="2 image placeholder tokens but the 1 images need 1"):
        vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"][:1], batch["patch_mask"][:1])
    with pytest.raises(ValueError, match="every_n_layers"):
        CrossAttentionFusion(every_n_layers=0)
    with pytest.raises(ValueError, match="media_masking"):
        CrossAttentionFusion(media_masking="next")


@pytest.mark.integration
def test_trains_through_the_cli(tmp_path):
    from pathlib import Path

    from vlmkit.cli import build_cli

    root = Path(__file__).resolve().parents[2] / "recipes"
    cli = build_cli(
        [
            "fit",
            "--config",
            str(root / "quickstart.yaml"),
            "--config",
            str(root / "fusion" / "cross_attention.yaml"),
            "--trainer.max_steps=3",
            "--data.init_args.num_train=12",
            "--data.init_args.num_val=4",
            "--data.init_args.batch_size=4",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    gates = [float(block.attn_gate) for block in cli.model.vlm.fusion.blocks]
    assert cli.trainer.global_step == 3 and all(g != 0.0 for g in gates)  # the new blocks trained
