"""A checkpoint's chat template: token ids equal to transformers' ``apply_chat_template`` + ``Idefics2Processor``."""

import pytest
from PIL import Image
from tiny_tokenizers import llama_tokenizer

from vlmkit.data.image_processing import ImageProcessor
from vlmkit.data.processor import VLMProcessor
from vlmkit.eval.prompts import build_prompt
from vlmkit.eval.sample import EvalSample
from vlmkit.text import ChatTemplate, Turn, build_synthetic_tokenizer
from vlmkit.text.template import IGNORE_INDEX, SplitImageTokens

# The chat template of HuggingFaceM4/idefics2-8b (processor_config.json), as published.
OFFICIAL_IDEFICS2_CHAT_TEMPLATE = (
    "{% for message in messages %}{{message['role'].capitalize()}}{% if message['content'][0]['type'] == 'image' %}"
    "{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}"
    "{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
TOKENS_PER_IMAGE = 3
IMAGE = {"type": "image"}

CONVERSATIONS = {
    "image_first": [Turn("user", [IMAGE, "What color is the circle?"])],
    "text_first": [Turn("user", ["How many shapes are there?", IMAGE])],
    "text_image_text": [Turn("user", ["Describe", IMAGE, "briefly."])],
    "two_images": [Turn("user", [IMAGE, IMAGE, "Which shape is red?"])],
    "multi_turn": [
        Turn("system", ["You answer briefly."]),
        Turn("user", [IMAGE, "What color is the circle?"]),
        Turn("assistant", ["red"]),
        Turn("user", ["And the square?"]),
        Turn("assistant", ["blue"]),
    ],
}
TOKENIZERS = {
    "byte_level": build_synthetic_tokenizer,
    "llama_bos": lambda: llama_tokenizer(add_bos_token=True),
    "llama_no_bos": lambda: llama_tokenizer(add_bos_token=False),
}


@pytest.fixture(scope="module", params=list(TOKENIZERS))
def processor(request):
    """transformers' ``Idefics2Processor`` with the official template; its tokenizer gains the image tokens."""
    from transformers import Idefics2ImageProcessor, Idefics2Processor

    image_processor = Idefics2ImageProcessor(size={"shortest_edge": 16, "longest_edge": 32}, do_image_splitting=False)
    return Idefics2Processor(
        image_processor,
        TOKENIZERS[request.param](),
        image_seq_len=TOKENS_PER_IMAGE,
        chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE,
    )


def _messages(turns):
    return [
        {"role": t.role, "content": [s if isinstance(s, dict) else {"type": "text", "text": s} for s in t.content]}
        for t in turns
    ]


def _theirs(processor, turns, add_generation_prompt, images=None, split=False):
    processor.image_processor.do_image_splitting = split
    text = processor.apply_chat_template(_messages(turns), add_generation_prompt=add_generation_prompt)
    return processor(text=text, images=images)["input_ids"][0]


def _num_images(turns):
    return sum(1 for turn in turns for segment in turn.content if segment == IMAGE)


def test_vlmkit_constant_is_the_official_template():
    from vlmkit.interop import IDEFICS2_CHAT_TEMPLATE

    assert IDEFICS2_CHAT_TEMPLATE == OFFICIAL_IDEFICS2_CHAT_TEMPLATE


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_ids_equal_transformers_processor(processor, name, split):
    turns = CONVERSATIONS[name]
    template = ChatTemplate(processor.tokenizer, crop_markers=False, chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE)
    layout = SplitImageTokens(TOKENS_PER_IMAGE) if split else TOKENS_PER_IMAGE
    prompts = [False] if turns[-1].role == "assistant" else [False, True]
    for add_generation_prompt in prompts:
        encoded = template.encode(turns, [layout] * _num_images(turns), add_generation_prompt=add_generation_prompt)
        assert encoded.input_ids == _theirs(processor, turns, add_generation_prompt, split=split)


def test_bos_follows_the_tokenizer(processor):
    """vlmkit's own layout always starts with BOS; a checkpoint's text only when its tokenizer adds one."""
    tokenizer = processor.tokenizer
    turns = CONVERSATIONS["text_first"]
    encoded = ChatTemplate(tokenizer, chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE).encode(turns, [TOKENS_PER_IMAGE])
    adds_bos = tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id
    assert (encoded.input_ids[0] == tokenizer.bos_token_id) == adds_bos
    assert ChatTemplate(tokenizer).encode(turns, [TOKENS_PER_IMAGE]).input_ids[0] == tokenizer.bos_token_id


def test_answer_only_labels(processor):
    tokenizer = processor.tokenizer
    template = ChatTemplate(tokenizer, chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE)
    encoded = template.encode(CONVERSATIONS["multi_turn"], [TOKENS_PER_IMAGE])
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(encoded.input_ids, encoded.labels))
    trained = [label for label in encoded.labels if label != IGNORE_INDEX]
    # each answer with the space after "Assistant:" and its <end_of_utterance>, not the "\n" that follows
    prefix = tokenizer("Assistant:", add_special_tokens=False)["input_ids"]
    expected = []
    for answer in ("red", "blue"):
        expected += tokenizer(f"Assistant: {answer}<end_of_utterance>", add_special_tokens=False)["input_ids"][
            len(prefix) :
        ]
    assert trained == expected, tokenizer.convert_ids_to_tokens(trained)


def test_train_on_all_labels_everything_but_images_and_bos(processor):
    tokenizer = processor.tokenizer
    template = ChatTemplate(tokenizer, train_on="all", chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE)
    encoded = template.encode(CONVERSATIONS["two_images"], [TOKENS_PER_IMAGE] * 2)
    image_tokens = {template.image_token_id, template.fake_token_id}
    for i, (token, label) in enumerate(zip(encoded.input_ids, encoded.labels)):
        untrained = token in image_tokens or (i == 0 and token == tokenizer.bos_token_id)
        assert label == (IGNORE_INDEX if untrained else token)


@pytest.mark.parametrize("markers", [False, True])
def test_image_spans_cover_each_block(processor, markers):
    template = ChatTemplate(processor.tokenizer, crop_markers=markers, chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE)
    layouts = [SplitImageTokens(TOKENS_PER_IMAGE), TOKENS_PER_IMAGE]
    encoded = template.encode(CONVERSATIONS["two_images"], layouts)
    ids, (first, second) = encoded.input_ids, encoded.image_spans
    assert first[1] == second[0]  # adjacent images: the shared fake token belongs to the first
    assert ids[first[0]] == ids[second[1] - 1] == template.fake_token_id
    assert ids[first[0] : first[1]].count(template.image_token_id) == 5 * TOKENS_PER_IMAGE
    assert ids[second[0] : second[1]] == [template.image_token_id] * TOKENS_PER_IMAGE + [template.fake_token_id]
    outside = ids[: first[0]] + ids[second[1] :]
    assert template.image_token_id not in outside and template.fake_token_id not in outside


def _sample(index, images):
    return EvalSample(f"q{index}", tuple(images), f"Which shape is number {index}?", (str(index),), task="task")


@pytest.mark.parametrize("chat", [True, False])
def test_eval_prompts_equal_transformers_processor(processor, chat):
    """Few-shot prompts (chat turns, or plain text for base models) with their images through the processor."""
    images = [Image.new("RGB", (24, 16), color) for color in ("red", "blue", "green")]
    shots, query = [_sample(0, images[:1]), _sample(1, images[1:2])], _sample(2, images[2:])
    prompt_images, turns = build_prompt(query, shots, "open", chat=chat)
    ours = VLMProcessor(
        processor.tokenizer,
        ImageProcessor(8, (0.5,) * 3, (0.5,) * 3, 32, 16),
        lambda height, width: TOKENS_PER_IMAGE,
        chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE,
    )(prompt_images, turns, add_generation_prompt=chat)
    if chat:
        theirs = _theirs(processor, turns, True, images=prompt_images)
    else:
        text = "".join("<image>" if s == IMAGE else s for s in turns[0].content)
        processor.image_processor.do_image_splitting = False
        theirs = processor(text=text, images=prompt_images)["input_ids"][0]
    assert ours["input_ids"].tolist() == theirs
    assert len(ours["pixel_values"]) == 3


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([Turn("user", ["a <image> in text"])], "give images as"),
        ([Turn("text", ["caption"]), Turn("user", ["hi"])], "cannot be mixed"),
        ([Turn("user", [IMAGE])], "more image segments than images given"),
    ],
)
def test_bad_conversations_are_named(turns, message):
    template = ChatTemplate(llama_tokenizer_with_image_tokens(), chat_template=OFFICIAL_IDEFICS2_CHAT_TEMPLATE)
    with pytest.raises(ValueError, match=message):
        template.encode(turns, [])


def test_a_template_that_is_not_prefix_stable_is_refused():
    # the last turn renders differently: the answers cannot be located in the whole conversation
    template = "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'][0]['text'] }}{% endfor %}"
    turns = [Turn("user", ["hi"]), Turn("assistant", ["red"]), Turn("user", ["ok"])]
    with pytest.raises(ValueError, match="not prefix-stable at turn 1"):
        ChatTemplate(llama_tokenizer_with_image_tokens(), chat_template=template).encode(turns, [])


def llama_tokenizer_with_image_tokens():
    from vlmkit.text import add_vlm_special_tokens

    return add_vlm_special_tokens(llama_tokenizer())
