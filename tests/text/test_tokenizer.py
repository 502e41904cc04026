from vlmkit.text import END_OF_UTTERANCE_TOKEN, FAKE_IMAGE_TOKEN, IMAGE_TOKEN, add_vlm_special_tokens, load_tokenizer
from vlmkit.text.synthetic_vocabulary import vocabulary_corpus


def test_synthetic_tokenizer_is_deterministic(tokenizer):
    from vlmkit.text import build_synthetic_tokenizer

    first = build_synthetic_tokenizer().backend_tokenizer.to_str()
    second = build_synthetic_tokenizer().backend_tokenizer.to_str()
    assert first == second
    assert load_tokenizer("synthetic").get_vocab() == tokenizer.get_vocab()


def test_special_tokens_are_single_tokens_and_idempotent(tokenizer):
    size = len(tokenizer)
    for token in (IMAGE_TOKEN, FAKE_IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN):
        assert tokenizer.tokenize(token) == [token]
    add_vlm_special_tokens(tokenizer)
    assert len(tokenizer) == size
    assert tokenizer.pad_token_id is not None


def test_synthetic_words_round_trip_without_unknowns(tokenizer):
    text = " ".join(vocabulary_corpus()[:200])
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
    # the task words are merged: a colour answer is one token
    assert len(tokenizer.encode(" orange", add_special_tokens=False)) == 1


def test_tokenizer_loads_from_a_saved_directory(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.encode("What color is the circle?") == tokenizer.encode("What color is the circle?")
