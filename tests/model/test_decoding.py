"""The decode loop's helpers: which tokens can complete a stop string, the host-side watcher, prompt checks."""

import pytest
import torch

from vlmkit.model.decoding import StopStringWatcher, check_prompts, sharded_across_ranks, stop_string_candidates


def test_only_tokens_holding_a_stop_strings_last_character_or_a_partial_byte_are_candidates(tokenizer):
    candidates = stop_string_candidates(tokenizer, ["Question", "User"])
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    for token, piece in enumerate(pieces):
        assert bool(candidates[token]) == ("n" in piece or "r" in piece or "\ufffd" in piece), (token, piece)
    assert 0 < int(candidates.sum()) < len(tokenizer) // 2  # most tokens need no decoding
    assert bool(stop_string_candidates(tokenizer, [""]).all())  # an empty stop string is in every text


def test_watcher_decodes_only_candidate_rows_and_finds_the_first_hit(tokenizer, monkeypatch):
    stops = ["Question"]
    ids = tokenizer.encode(" red. Question: why", add_special_tokens=False)
    other = tokenizer.encode(" a b c d e f g h i j", add_special_tokens=False)[: len(ids)]
    watcher = StopStringWatcher(tokenizer, stops, stop_string_candidates(tokenizer, stops), batch_size=2)
    decodes = []
    original = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode", lambda *a, **k: decodes.append(1) or original(*a, **k))
    hits = [watcher.update(torch.tensor([a, b]), torch.tensor([False, False])) for a, b in zip(ids, other)]
    first = next(k for k in range(len(ids)) if "Question" in original(ids[: k + 1]))
    assert [k for k, rows in enumerate(hits) if rows] == [first] and hits[first] == [0]
    assert len(decodes) < 2 * len(ids)  # not every row at every step


def test_check_prompts_names_bad_rows():
    mask = check_prompts(torch.tensor([[1, 2]]), None)
    assert torch.equal(mask, torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"prompt rows \[0, 2\] are not left-padded"):
        check_prompts(torch.ones(3, 2, dtype=torch.long), torch.tensor([[1, 0], [1, 1], [1, 0]]))
    assert not sharded_across_ranks(torch.nn.Linear(2, 2))  # no process group: plain decoding


def test_top_k_samples_only_among_the_k_likeliest_tokens():
    from vlmkit.model.decoding import next_token

    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 2.8]]).repeat(400, 1)  # [400, 5]
    generator = torch.Generator().manual_seed(0)
    drawn = next_token(logits, True, 5.0, 1.0, generator, top_k=2)
    assert set(drawn.tolist()) == {1, 2}  # a hot temperature reaches every token of the two
    assert set(next_token(logits, True, 5.0, 1.0, generator).tolist()) == {0, 1, 2, 3, 4}  # without a cut: all
    with pytest.raises(ValueError, match="top_k must be >= 0"):
        next_token(logits, True, 1.0, 1.0, generator, top_k=-1)
