import pytest
from PIL import Image

from vlmkit.eval.prompts import build_prompt, format_question, select_shots, shot_answer
from vlmkit.eval.sample import EvalSample
from vlmkit.text import ChatTemplate


def sample(i: int, **kwargs) -> EvalSample:
    image = Image.new("RGB", (8, 8), (i, 0, 0))
    fields = {"id": str(i), "images": (image,), "question": f"q{i}?", "answers": (f"a{i}",), "task": "t"}
    return EvalSample(**(fields | kwargs))


def test_paper_prompts():
    assert format_question(sample(1), "open") == "Question: q1?\nGive a very brief answer."
    mc = sample(2, choices=("red", "blue"), answers=("B",))
    assert format_question(mc, "multiple_choice") == "Question: q2?\nChoices:\nA. red\nB. blue\nAnswer with the letter."
    assert format_question(sample(3, context="hint"), "raw") == "hint\nq3?"
    with pytest.raises(ValueError, match="no choices"):
        format_question(sample(4), "multiple_choice")


def test_shot_answer_is_the_most_common_reference():
    assert shot_answer(sample(1, answers=("x", "y", "y", "z"))) == "y"


def test_shots_are_seeded_per_query_and_never_the_query():
    support = [sample(i) for i in range(20)]
    query = support[3]
    shots = select_shots(support, 8, seed=0, query=query)
    assert len(shots) == 8 and query not in shots and len({s.id for s in shots}) == 8
    assert shots == select_shots(list(reversed(support)), 8, seed=0, query=query)
    assert shots == select_shots(support, 8, seed=0, query=query)
    assert shots != select_shots(support, 8, seed=1, query=query)
    with pytest.raises(ValueError, match="needs 30 support samples"):
        select_shots(support, 30, seed=0, query=query)


def test_few_shot_chat_layout_interleaves_images_with_their_turns(tokenizer):
    shots = [sample(1), sample(2)]
    images, turns = build_prompt(sample(9), shots, "open", chat=True)
    assert [im.getpixel((0, 0))[0] for im in images] == [1, 2, 9]  # shot images first, in order
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant", "user"]
    ids = ChatTemplate(tokenizer).encode(turns, [1, 1, 1], add_generation_prompt=True).input_ids
    text = tokenizer.decode(ids)
    blocks = text.split("<fake_token_around_image><image><fake_token_around_image>")
    assert len(blocks) == 4 and "a1" in blocks[1] and "q2?" in blocks[2] and "a2" in blocks[2]
    assert blocks[3].startswith("Question: q9?") and text.endswith("Assistant:")


def test_plain_text_layout_for_base_models(tokenizer):
    images, turns = build_prompt(sample(9), [sample(1)], "open", chat=False)
    ids = ChatTemplate(tokenizer).encode(turns, [1, 1]).input_ids
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert "User:" not in text and "<end_of_utterance>" not in text
    assert text.endswith("Question: q9?\nGive a very brief answer.\nAnswer:")
    assert "Answer: a1\n" in text
