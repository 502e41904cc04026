import torch

from vlmkit.eval.generation import decode


def test_decode_cuts_at_the_first_stop_string(tokenizer):
    ids = torch.tensor([tokenizer.encode(" red Question: what", add_special_tokens=False)])
    assert decode(ids, tokenizer) == ["red"]
    assert decode(ids, tokenizer, stop_strings=()) == ["red Question: what"]


def test_stop_strings_end_generation_per_sequence(tiny_vlm):
    prompt = torch.tensor([[1, 5, 9], [1, 7, 7]])
    free = tiny_vlm.generate(prompt, max_new_tokens=6, stop_token_ids=[])
    first_text = tiny_vlm.tokenizer.decode(free[0, :2], skip_special_tokens=True)
    stopped = tiny_vlm.generate(prompt, max_new_tokens=6, stop_token_ids=[], stop_strings=[first_text])
    pad = tiny_vlm.tokenizer.pad_token_id
    assert stopped.shape[1] <= 6
    # the first sequence stops once its text contains the stop string: everything after is padding
    assert (stopped[0, 2:] == pad).all()


def test_sampling_is_reproducible_with_a_generator(tiny_vlm):
    prompt = torch.tensor([[1, 5, 9]])
    draws = [
        tiny_vlm.generate(
            prompt,
            max_new_tokens=5,
            stop_token_ids=[],
            do_sample=True,
            temperature=1.5,
            generator=torch.Generator().manual_seed(s),
        )
        for s in (0, 0, 1)
    ]
    assert torch.equal(draws[0], draws[1])
    greedy = tiny_vlm.generate(prompt, max_new_tokens=5, stop_token_ids=[])
    tiny = tiny_vlm.generate(
        prompt,
        max_new_tokens=5,
        stop_token_ids=[],
        do_sample=True,
        top_p=1e-6,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(tiny, greedy)  # nucleus of one token = greedy
