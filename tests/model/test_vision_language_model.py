import functools

import pytest
import torch
from tiny_models import build_tiny_vlm, uncached_greedy

from vlmkit.connectors import LinearProjection, MappingNetwork, MLPProjection, PerceiverResampler, PixelShuffleConnector
from vlmkit.data import SyntheticVQADataModule


@pytest.fixture(scope="module")
def batch(tiny_vlm):
    dm = SyntheticVQADataModule(
        num_train=8, batch_size=4, min_size=16, max_size=40, max_image_size=40, min_image_size=16
    )
    dm.connect(tiny_vlm)
    return next(iter(dm.train_dataloader()))


@pytest.fixture(scope="module")
def prompts(tiny_vlm):
    dm = SyntheticVQADataModule(
        num_predict=3, batch_size=3, min_size=16, max_size=40, max_image_size=40, min_image_size=16
    )
    dm.connect(tiny_vlm)
    return next(iter(dm.predict_dataloader()))


def _run(vlm, batch):
    return vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"]).logits


def test_forward_gives_logits_over_the_extended_vocabulary(tiny_vlm, batch):
    logits = _run(tiny_vlm, batch)
    assert logits.shape == (*batch["input_ids"].shape, tiny_vlm.language_model.vocab_size)
    assert tiny_vlm.language_model.vocab_size >= len(tiny_vlm.tokenizer)


def test_images_change_the_logits_only_after_their_placeholders(tiny_vlm, batch):
    torch.manual_seed(0)
    other = dict(batch, pixel_values=batch["pixel_values"] + torch.randn_like(batch["pixel_values"]))
    a, b = _run(tiny_vlm, batch), _run(tiny_vlm, other)
    first_image = int((batch["input_ids"][0] == tiny_vlm.image_token_id).nonzero()[0])
    assert torch.allclose(a[0, :first_image], b[0, :first_image], atol=1e-6)
    assert not torch.allclose(a[0, first_image:], b[0, first_image:], atol=1e-4)


def test_placeholder_mismatch_raises_with_both_counts(tiny_vlm, batch):
    ids = batch["input_ids"].clone()
    pos = (ids == tiny_vlm.image_token_id).nonzero()[0]
    ids[pos[0], pos[1]] = 5  # drop one placeholder
    expected = int((batch["input_ids"] == tiny_vlm.image_token_id).sum())
    with pytest.raises(ValueError, match=f"{expected - 1} image placeholder tokens .* need {expected} visual tokens"):
        tiny_vlm(ids, batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
    with pytest.raises(ValueError, match=f"{expected} image placeholder tokens but the 0 images need 0"):
        tiny_vlm(batch["input_ids"], batch["attention_mask"])


def test_num_image_tokens_matches_the_connector(tiny_vlm):
    assert tiny_vlm.num_image_tokens(32, 64) == 4  # perceiver: fixed latents
    mlp = build_tiny_vlm(connector=MLPProjection)
    assert mlp.num_image_tokens(32, 64) == (32 // 8) * (64 // 8)  # MLP: one token per patch


@pytest.mark.parametrize(
    "connector",
    [
        MLPProjection,
        functools.partial(LinearProjection, num_patches=25, num_tokens=3),
        functools.partial(MappingNetwork, num_tokens=3, hidden_dim=16, depth=1, num_heads=2),
        functools.partial(PerceiverResampler, num_latents=3, depth=1, num_heads=2, head_dim=8, num_key_value_heads=1),
    ],
    ids=["mlp", "linear", "mapping", "perceiver"],
)
def test_every_connector_trains_end_to_end_with_mixed_image_sizes(connector):
    vlm = build_tiny_vlm(connector=connector, train_vision_encoder="frozen", train_language_model="frozen")
    dm = SyntheticVQADataModule(
        num_train=4, batch_size=4, min_size=16, max_size=40, max_image_size=40, min_image_size=16
    )
    dm.connect(vlm)
    batch = next(iter(dm.train_dataloader()))
    assert batch["patch_mask"].flatten(1).sum(1).unique().numel() > 1  # really mixed sizes
    from vlmkit.training.module import answer_loss

    logits = _run(vlm, batch)
    answer_loss(logits, batch["labels"]).backward()
    for name, param in vlm.named_parameters():
        trainable = name.startswith("connector.") or ".trainable_rows." in name  # + the new tokens' rows
        assert param.requires_grad == trainable, name
        if trainable:
            assert param.grad is not None, name
    assert vlm.connector.in_dim == 48 and vlm.connector.out_dim == 64
    # padding has no effect: each sample alone (own image size, no padding) gives the same logits
    with torch.no_grad():
        for i in range(4):
            real = batch["attention_mask"][i].bool()
            rows, cols = (int(x) for x in batch["patch_mask"][i].nonzero().max(0).values + 1)
            alone = vlm(
                batch["input_ids"][i : i + 1, real], None, batch["pixel_values"][i : i + 1, :, : rows * 8, : cols * 8]
            )
            assert torch.allclose(alone.logits[0], logits[i, real], atol=1e-4)


def test_trainability_is_declared_at_composition():
    vlm = build_tiny_vlm(train_vision_encoder="full", train_language_model="frozen")
    assert all(p.requires_grad for p in vlm.vision_encoder.parameters())
    trainable = [n for n, p in vlm.language_model.named_parameters() if p.requires_grad]
    assert trainable == ["model.model.embed_tokens.trainable_rows.delta", "model.lm_head.trainable_rows.delta"]
    with pytest.raises(ValueError, match="train_language_model='lora!'"):
        build_tiny_vlm(train_language_model="lora!")


def test_connector_width_mismatch_is_reported():
    with pytest.raises(ValueError, match="connector in_dim=32 != vision encoder hidden_size=48"):
        build_tiny_vlm(connector=MLPProjection(32, 64))
    with pytest.raises(ValueError, match="out_dim=16, language model hidden_size=64"):
        build_tiny_vlm(connector=MLPProjection(48, 16))


def test_cached_greedy_generation_equals_uncached_argmax_loop(tiny_vlm, prompts):
    generated = tiny_vlm.generate(
        prompts["input_ids"],
        prompts["attention_mask"],
        prompts["pixel_values"],
        prompts["patch_mask"],
        max_new_tokens=4,
        stop_token_ids=[],
    )
    assert generated.shape == (3, 4)
    assert torch.equal(generated, uncached_greedy(tiny_vlm, prompts, 4))


def test_generation_runs_the_head_on_one_position_per_row(tiny_vlm, prompts):
    head = tiny_vlm.language_model.get_output_embeddings()
    positions = []
    hook = head.register_forward_hook(lambda module, args, out: positions.append(args[0].shape[1]))
    try:
        tiny_vlm.generate(*(prompts[k] for k in ("input_ids", "attention_mask", "pixel_values", "patch_mask")),
                          max_new_tokens=3, stop_token_ids=[])  # fmt: skip
    finally:
        hook.remove()
    assert positions == [1, 1, 1]  # the prefill scores its last position only, like each decode step


def test_logits_to_keep_keeps_the_last_positions(tiny_vlm, batch):
    args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
    with torch.no_grad():
        full = tiny_vlm(*args).logits
        last = tiny_vlm(*args, logits_to_keep=2).logits
    torch.testing.assert_close(last, full[:, -2:], atol=1e-5, rtol=1e-5)


def test_batched_generation_equals_one_by_one(tiny_vlm, prompts):
    batched = tiny_vlm.generate(
        prompts["input_ids"],
        prompts["attention_mask"],
        prompts["pixel_values"],
        prompts["patch_mask"],
        max_new_tokens=3,
        stop_token_ids=[],
    )
    for i in range(3):
        real = prompts["attention_mask"][i].bool()
        patches = prompts["patch_mask"][i]
        h, w = int(patches.any(1).sum()) * 8, int(patches.any(0).sum()) * 8
        single = tiny_vlm.generate(
            prompts["input_ids"][i : i + 1, real],
            None,
            prompts["pixel_values"][i : i + 1, :, :h, :w],
            None,
            max_new_tokens=3,
            stop_token_ids=[],
        )
        assert torch.equal(single[0], batched[i])


def test_generation_stops_per_sequence_and_pads(tiny_vlm, prompts):
    args = (prompts["input_ids"], prompts["attention_mask"], prompts["pixel_values"], prompts["patch_mask"])
    free = tiny_vlm.generate(*args, max_new_tokens=3, stop_token_ids=[])
    stop = int(free[0, 0])  # the first sequence stops right away
    stopped = tiny_vlm.generate(*args, max_new_tokens=3, stop_token_ids=[stop])
    assert stopped[0, 0] == stop and (stopped[0, 1:] == tiny_vlm.tokenizer.pad_token_id).all()
    for i in range(1, 3):
        if stop not in free[i].tolist():
            assert torch.equal(stopped[i], free[i])


def test_the_streamer_sees_every_step_as_it_is_chosen(tiny_vlm, prompts):
    args = (prompts["input_ids"], prompts["attention_mask"], prompts["pixel_values"], prompts["patch_mask"])
    steps = []
    generated = tiny_vlm.generate(*args, max_new_tokens=4, stop_token_ids=[], streamer=steps.append)
    assert torch.equal(torch.stack(steps, 1), generated)


def test_generate_rejects_bad_prompts_naming_the_rows(tiny_vlm):
    with pytest.raises(ValueError, match=r"prompt rows \[0\] are not left-padded"):
        tiny_vlm.generate(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]]))
    with pytest.raises(ValueError, match=r"prompt rows \[1\] are all padding"):
        tiny_vlm.generate(torch.tensor([[1, 2, 3], [0, 0, 0]]), torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"at least one row and one token, got input_ids of shape \(2, 0\)"):
        tiny_vlm.generate(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\) but input_ids \(1, 3\)"):
        tiny_vlm.generate(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1]]))


def _stop_string_reference(free: torch.Tensor, tokenizer, stop_strings, pad_id: int) -> torch.Tensor:
    """Per row: the free generation up to the first step whose text holds a stop string, then padding."""
    out, ends = free.clone(), []
    for row in range(free.shape[0]):
        texts = [tokenizer.decode(free[row, : k + 1], skip_special_tokens=True) for k in range(free.shape[1])]
        end = next((k for k, t in enumerate(texts) if any(s in t for s in stop_strings)), free.shape[1] - 1)
        out[row, end + 1 :] = pad_id
        ends.append(end)
    return out[:, : max(ends) + 1]


@pytest.mark.parametrize("lag", [0, 1])  # 1: the host reads the device one step late, as on CUDA
def test_stop_strings_end_each_row_at_its_first_occurrence(tiny_vlm, monkeypatch, lag):
    monkeypatch.setattr("vlmkit.model.generation.host_lag", lambda device: lag)
    prompt = torch.tensor([[1, 5, 9], [1, 7, 7], [3, 4, 5]])
    tokenizer = tiny_vlm.tokenizer
    free = tiny_vlm.generate(prompt, max_new_tokens=8, stop_token_ids=[])
    texts = [tokenizer.decode(free[row, :5], skip_special_tokens=True) for row in range(3)]
    stop_strings = [texts[2][-4:-1], texts[1][-1:]]  # a multi-token string, and a character made of byte tokens
    expected = _stop_string_reference(free, tokenizer, stop_strings, tokenizer.pad_token_id)
    assert expected.shape[1] == 8 and (expected[1:, -1] == tokenizer.pad_token_id).all()  # rows end apart
    stopped = tiny_vlm.generate(prompt, max_new_tokens=8, stop_token_ids=[], stop_strings=stop_strings)
    assert torch.equal(stopped, expected)
    # all rows ending early: the output ends at the last row's end, as without the lag
    early = tiny_vlm.generate(prompt[1:], max_new_tokens=8, stop_token_ids=[], stop_strings=stop_strings)
    assert torch.equal(early, _stop_string_reference(free[1:], tokenizer, stop_strings, tokenizer.pad_token_id))
    assert early.shape[1] < 8


def test_one_step_host_lag_gives_the_same_tokens_and_lengths(tiny_vlm, prompts, monkeypatch):
    args = (prompts["input_ids"], prompts["attention_mask"], prompts["pixel_values"], prompts["patch_mask"])
    free = tiny_vlm.generate(*args, max_new_tokens=4, stop_token_ids=[])
    stops = [int(free[0, 1]), int(free[1, 0]), int(free[2, 0])]  # every row ends by step 1
    immediate = tiny_vlm.generate(*args, max_new_tokens=4, stop_token_ids=stops)
    monkeypatch.setattr("vlmkit.model.generation.host_lag", lambda device: 1)
    assert torch.equal(tiny_vlm.generate(*args, max_new_tokens=4, stop_token_ids=[]), free)
    lagged = tiny_vlm.generate(*args, max_new_tokens=4, stop_token_ids=stops)
    assert immediate.shape[1] <= 2 and torch.equal(lagged, immediate)


def test_interleaved_images_fill_their_own_placeholders(tiny_vlm):
    from PIL import Image

    from vlmkit.data import VLMCollator, VLMProcessor
    from vlmkit.text import Turn

    processor = VLMProcessor.from_model(tiny_vlm, max_image_size=40, min_image_size=16)
    images = [Image.new("RGB", (40, 24), (200, 30, 30)), Image.new("RGB", (16, 32), (30, 30, 200))]
    turns = [Turn("user", [{"type": "image"}, "first, then", {"type": "image"}, "second?"]), Turn("assistant", ["ok"])]
    two = processor(images, turns)
    one = processor(images[:1], [Turn("user", [{"type": "image"}, "one?"]), Turn("assistant", ["ok"])])
    collate = VLMCollator(tiny_vlm.tokenizer.pad_token_id, 8)
    batch = collate([two, one])
    assert batch["pixel_values"].shape[0] == 3  # images of both samples, in text order
    base = _run(tiny_vlm, batch)
    changed = batch["pixel_values"].clone()
    changed[1] = torch.randn_like(changed[1])  # the second image of the first sample
    logits = _run(tiny_vlm, dict(batch, pixel_values=changed))
    second_start = int((batch["input_ids"][0] == tiny_vlm.image_token_id).nonzero()[4])  # 4 latents per image
    assert torch.allclose(base[0, :second_start], logits[0, :second_start], atol=1e-6)
    assert not torch.allclose(base[0, second_start:], logits[0, second_start:], atol=1e-4)
    assert torch.allclose(base[1], logits[1], atol=1e-6)  # the other sample is untouched


def test_neftune_noises_training_forward_only(batch):
    plain = build_tiny_vlm().train()
    noisy = build_tiny_vlm(neftune_alpha=5.0).train()
    torch.manual_seed(0)
    with torch.no_grad():
        reference = _run(plain, batch)
        assert not torch.allclose(_run(noisy, batch), reference, atol=1e-4)
        plain.eval(), noisy.eval()
        torch.testing.assert_close(_run(noisy, batch), _run(plain, batch), rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(batch):
    from vlmkit.training.module import answer_loss

    results = []
    for checkpointing in (False, True):
        vlm = build_tiny_vlm(gradient_checkpointing=checkpointing, train_language_model="lora").train()
        loss = answer_loss(_run(vlm, batch), batch["labels"])
        loss.backward()
        grads = {
            n.replace("._checkpoint_wrapped_module", ""): p.grad.clone()
            for n, p in vlm.named_parameters()
            if p.grad is not None
        }
        results.append((vlm, loss.detach(), grads))
    (plain, loss, grads), (wrapped, loss_ckpt, grads_ckpt) = results
    assert set(plain.state_dict()) == set(wrapped.state_dict())  # checkpoint wrappers keep the keys
    assert wrapped.block_classes() == plain.block_classes()  # the layer types, not the checkpoint wrapper
    wrappers = sum("checkpoint" in type(m).__name__.lower() for m in wrapped.modules())
    assert wrappers == 2 + 1 + 2  # vision layers, perceiver layer, decoder layers
    torch.testing.assert_close(loss_ckpt, loss)
    assert set(grads_ckpt) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5)


@pytest.mark.integration
def test_compiled_blocks_give_the_eager_logits_and_gradients(batch):
    from vlmkit.training.module import answer_loss

    results = []
    for compile_blocks in (False, True):
        vlm = build_tiny_vlm(compile_blocks=compile_blocks, train_language_model="full").train()
        logits = _run(vlm, batch)
        answer_loss(logits, batch["labels"]).backward()
        grads = {n: p.grad.clone() for n, p in vlm.named_parameters() if p.grad is not None}
        results.append((vlm, logits.detach(), grads))
    (_, logits, grads), (compiled, compiled_logits, compiled_grads) = results
    assert sum(getattr(m, "_compiled_call_impl", None) is not None for m in compiled.modules()) == 2 + 1 + 2
    torch.testing.assert_close(compiled_logits, logits, atol=1e-5, rtol=1e-4)
    assert set(compiled_grads) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4)


def _accelerator_path(monkeypatch):
    """Take the code path of a GPU run on CPU: checks become device-side assertions, no host reads."""
    import vlmkit.checks
    import vlmkit.model.vision_language_model
    import vlmkit.vision.patch_grid

    for module in (vlmkit.checks, vlmkit.model.vision_language_model, vlmkit.vision.patch_grid):
        monkeypatch.setattr(module, "host_reads_are_free", lambda tensor: False)


@pytest.mark.parametrize(
    "connector",
    [None, MLPProjection, functools.partial(PixelShuffleConnector, scale_factor=2)],
    ids=["perceiver", "mlp", "pixel_shuffle"],  # pixel shuffle: tokens per grid shape, looked up on the device
)
def test_a_training_step_reads_nothing_from_the_device(connector, monkeypatch):
    from sync_audit import HostReads

    from vlmkit.training.module import answer_loss

    vlm = build_tiny_vlm(connector=connector, train_language_model="lora")
    dm = SyntheticVQADataModule(num_train=4, batch_size=4, min_size=16, max_size=40, max_image_size=40)
    dm.connect(vlm)
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        host_checked = _run(vlm, batch)
    with HostReads() as cpu_reads:  # on CPU the checks read their counts (free there)
        _run(vlm, batch)
    assert cpu_reads.calls
    _accelerator_path(monkeypatch)
    with HostReads() as reads:
        logits = _run(vlm, batch)
        answer_loss(logits, batch["labels"]).backward()
    assert reads.calls == []  # (transformers' own causal-mask shortcut still reads the attention mask)
    torch.testing.assert_close(logits.detach(), host_checked, rtol=0, atol=1e-5)


def test_off_cpu_the_checks_still_stop_bad_inputs(tiny_vlm, batch, monkeypatch):
    _accelerator_path(monkeypatch)
    ids = batch["input_ids"].clone()
    pos = (ids == tiny_vlm.image_token_id).nonzero()[0]
    ids[pos[0], pos[1]] = 5  # drop one placeholder
    # torch._assert_async raises at once on CPU; on a GPU the run stops at the next synchronisation
    with pytest.raises(RuntimeError, match=r"holds \? image placeholder tokens .* on CPU give the counts"):
        tiny_vlm(ids, batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
    holes = batch["patch_mask"].clone()
    holes[0, 0, 0] = False
    with pytest.raises(RuntimeError, match="top-left rectangle"):
        tiny_vlm(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], holes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generation_reading_the_device_one_step_late_equals_reading_at_once(prompts, monkeypatch):
    vlm = build_tiny_vlm().eval().cuda()
    args = [prompts[k].cuda() for k in ("input_ids", "attention_mask", "pixel_values", "patch_mask")]
    free = vlm.generate(*args, max_new_tokens=8, stop_token_ids=[])
    texts = [vlm.tokenizer.decode(row[:3], skip_special_tokens=True) for row in free]
    kwargs = {"max_new_tokens": 8, "stop_token_ids": [int(free[0, 1])], "stop_strings": [t[-1:] for t in texts if t]}
    lagged = vlm.generate(*args, **kwargs)  # on CUDA the host reads step t - 1 while the device runs step t
    monkeypatch.setattr("vlmkit.model.generation.host_lag", lambda device: 0)
    assert torch.equal(lagged, vlm.generate(*args, **kwargs))
