import pytest

from vlmkit.text import ChatTemplate, Turn
from vlmkit.text.template import IGNORE_INDEX


def test_image_blocks_follow_idefics2_layout(tokenizer):
    template = ChatTemplate(tokenizer)
    turns = [Turn("user", [{"type": "image"}, {"type": "image"}, "What color is the circle?"])]
    ids = template.encode(turns, [3, 2]).input_ids
    fake, image = template.fake_token_id, template.image_token_id
    start = ids.index(fake)
    # consecutive images share the fake token between them: F III F II F
    assert ids[start : start + 8] == [fake, image, image, image, fake, image, image, fake]
    assert ids.count(image) == 5


def test_labels_cover_only_the_answer_and_its_end_of_utterance(tokenizer):
    template = ChatTemplate(tokenizer)
    turns = [Turn("user", [{"type": "image"}, "What color is the circle?"]), Turn("assistant", ["red"])]
    encoded = template.encode(turns, [4])
    assert len(encoded.input_ids) == len(encoded.labels)
    trained = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == " red<end_of_utterance>"
    # labelled positions hold the input token itself
    for token, label in zip(encoded.input_ids, encoded.labels):
        assert label in (IGNORE_INDEX, token)


def test_multi_turn_trains_every_assistant_turn(tokenizer):
    template = ChatTemplate(tokenizer)
    turns = [
        Turn("user", ["How many shapes are there?"]),
        Turn("assistant", ["2"]),
        Turn("user", ["Which shape is red?"]),
        Turn("assistant", ["circle"]),
    ]
    encoded = template.encode(turns, [])
    trained = tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])
    assert trained == " 2<end_of_utterance> circle<end_of_utterance>"


def test_generation_prompt_ends_with_assistant(tokenizer):
    template = ChatTemplate(tokenizer)
    encoded = template.encode([Turn("user", ["hi"])], [], add_generation_prompt=True)
    assert tokenizer.decode(encoded.input_ids).endswith("<end_of_utterance>\nAssistant:")
    assert all(t == IGNORE_INDEX for t in encoded.labels)


def test_train_on_all_labels_text_but_not_images(tokenizer):
    template = ChatTemplate(tokenizer, train_on="all")
    encoded = template.encode([Turn("user", [{"type": "image"}, "a red circle."])], [2])
    for token, label in zip(encoded.input_ids, encoded.labels):
        if token in (template.image_token_id, template.fake_token_id, tokenizer.bos_token_id):
            assert label == IGNORE_INDEX
        else:
            assert label == token


@pytest.mark.parametrize(
    ("segments", "counts", "message"),
    [
        ([{"type": "image"}], [], "more image segments than images given (0)"),
        (["text only"], [5], "0 image segments but 1 images were given"),
        ([{"type": "video"}], [], "malformed segment"),
    ],
)
def test_image_count_mismatch_names_both_counts(tokenizer, segments, counts, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ChatTemplate(tokenizer).encode([Turn("user", segments)], counts)


def test_template_rejects_tokenizer_without_image_tokens():
    from vlmkit.text import build_synthetic_tokenizer

    with pytest.raises(ValueError, match="special tokens"):
        ChatTemplate(build_synthetic_tokenizer())


@pytest.mark.parametrize("markers", [True, False])
def test_split_image_layout(tokenizer, markers):
    from vlmkit.text.template import SplitImageTokens

    template = ChatTemplate(tokenizer, crop_markers=markers)
    turns = [Turn("user", [{"type": "image"}, "Q?"]), Turn("assistant", ["red"])]
    encoded = template.encode(turns, [SplitImageTokens(3)])
    text = tokenizer.decode(encoded.input_ids)
    assert encoded.input_ids.count(template.image_token_id) == 15  # 4 crops + the whole image
    if markers:  # Idefics3: marked crops, rows on lines, then the global view
        assert text.index("<row_1_col_1>") < text.index("<row_1_col_2>") < text.index("<row_2_col_2>")
        assert text.index("<row_2_col_2>") < text.index("<global-img>")
        assert encoded.input_ids.count(template.fake_token_id) == 6
    else:  # Idefics2: five image blocks sharing their fake tokens
        assert "<row_" not in text and encoded.input_ids.count(template.fake_token_id) == 6
    trained = tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX])
    assert trained == " red<end_of_utterance>"


def test_the_old_name_of_the_split_layout_still_works_with_a_warning():
    import pytest

    import vlmkit.text.template as template

    with pytest.warns(FutureWarning, match="SplitImage is now SplitImageTokens"):
        assert template.SplitImage is template.SplitImageTokens
