import functools

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TINY_LM, TINY_SIGLIP

from vlmkit.connectors import PerceiverResampler
from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.render import SampleRenderer
from vlmkit.data.sequence_packing import PackedCollator, block_diagonal_causal_mask, pack
from vlmkit.data.synthetic_sources import synthetic_record
from vlmkit.llm import TransformersCausalLM
from vlmkit.model import VisionLanguageModel
from vlmkit.text.template import IGNORE_INDEX
from vlmkit.training import VLMModule
from vlmkit.vision import TransformersVisionEncoder

CONNECTOR = functools.partial(
    PerceiverResampler, num_latents=4, depth=1, num_heads=2, head_dim=16, num_key_value_heads=1
)


@functools.lru_cache
def vlm(attention="sdpa", fusion=None):
    torch.manual_seed(0)
    return VisionLanguageModel(
        TransformersVisionEncoder(config=TINY_SIGLIP, position_embedding="bucket"),
        CONNECTOR,
        TransformersCausalLM(config=TINY_LM, tokenizer="synthetic", attn_implementation=attention),
        fusion=fusion,
    ).eval()


def samples(model):
    encoder = model.vision_encoder
    processor = ImageProcessor(encoder.patch_size, encoder.image_mean, encoder.image_std, 32, 16)
    render = SampleRenderer(model.tokenizer, processor, model.num_image_tokens, 200)
    records = [synthetic_record(f, 0, i) for i, f in enumerate(("pair", "interleaved", "conversation", "pdf", "pair"))]
    return [render(r) for r in records]


def test_pack_is_greedy_and_never_trains_across_samples():
    rows = [
        {"input_ids": torch.arange(n) + 10, "labels": torch.arange(n) + 10, "pixel_values": []} for n in (3, 4, 2, 5)
    ]
    packed = list(pack(rows, 7))
    assert [len(p["input_ids"]) for p in packed] == [7, 7]
    assert packed[0]["position_ids"].tolist() == [0, 1, 2, 0, 1, 2, 3]
    assert packed[0]["segment_ids"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert packed[0]["labels"].tolist() == [IGNORE_INDEX, 11, 12, IGNORE_INDEX, 11, 12, 13]
    with pytest.raises(ValueError, match="exceeds the packing length"):
        list(pack(rows, 4))


def test_block_diagonal_mask():
    mask = block_diagonal_causal_mask(torch.tensor([[0, 0, 1, -1]]), torch.float32)[0, 0]
    allowed = (mask == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_and_per_sample_loss_equal_unpacked(attention, tiny_vlm):
    model = tiny_vlm if attention == "sdpa" else vlm(attention)
    rendered = samples(model)
    collate = PackedCollator(model.tokenizer.pad_token_id, model.vision_encoder.patch_size)
    lengths = [len(r["input_ids"]) for r in rendered]
    packed_rows = list(pack(rendered, max(sum(lengths) * 2 // 3, max(lengths))))
    assert len(packed_rows) >= 2 and len(packed_rows[0]["segment_ids"].unique()) > 1
    packed = collate(packed_rows)  # two rows, the shorter padded
    with torch.no_grad():
        logits = VLMModule(model)(packed).logits  # through the training system's forward
    offsets = [(row, int(start)) for row, p in enumerate(packed_rows) for start in (p["position_ids"] == 0).nonzero()]
    assert len(offsets) == len(rendered)
    for sample, (row, start) in zip(rendered, offsets):
        alone = collate([sample])
        with torch.no_grad():
            expected = model(
                alone["input_ids"], alone["attention_mask"], alone.get("pixel_values"), alone.get("patch_mask")
            )
        n = len(sample["input_ids"])
        got = logits[row, start : start + n]
        torch.testing.assert_close(got, expected.logits[0], atol=1e-5, rtol=1e-5)
        labels = packed["labels"][row, start : start + n]
        loss_packed = F.cross_entropy(got[:-1], labels[1:], ignore_index=IGNORE_INDEX)
        loss_alone = F.cross_entropy(expected.logits[0, :-1], alone["labels"][0, 1:], ignore_index=IGNORE_INDEX)
        torch.testing.assert_close(loss_packed, loss_alone, atol=1e-5, rtol=1e-5)


def test_packing_without_isolation_would_differ(tiny_vlm):
    model = tiny_vlm
    packed = PackedCollator(model.tokenizer.pad_token_id, 8)(list(pack(samples(model), 200)))
    with torch.no_grad():
        isolated = model(packed["input_ids"], packed["attention_mask"], packed["pixel_values"], packed["patch_mask"],
                         position_ids=packed["position_ids"], segment_ids=packed["segment_ids"]).logits  # fmt: skip
        leaky = model(
            packed["input_ids"], packed["attention_mask"], packed["pixel_values"], packed["patch_mask"]
        ).logits
    assert not torch.allclose(isolated, leaky, atol=1e-3)


def test_cross_attention_fusion_refuses_packed_rows():
    from vlmkit.fusion.cross_attention import CrossAttentionFusion

    model = vlm(fusion=CrossAttentionFusion(every_n_layers=1, num_heads=4))
    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="CrossAttentionFusion declares supports_packing=False"):
        model(
            ids,
            torch.ones_like(ids),
            position_ids=torch.tensor([[0, 1, 0, 1]]),
            segment_ids=torch.tensor([[0, 0, 1, 1]]),
        )
