"""An imported Idefics3/SmolVLM checkpoint keeps its text: the token ids of its own processor and chat template."""

import pytest
from tiny_idefics3 import images, save_tiny
from transformers import AutoProcessor

from vlmkit.data.processor import VLMProcessor
from vlmkit.interop import Idefics3ProcessorSettings, import_idefics3
from vlmkit.text import Turn

IMAGE = {"type": "image"}
CONVERSATIONS = {
    "image_first_answered": ([Turn("user", [IMAGE, "What is it?"]), Turn("assistant", ["a cat"])], False),
    "multi_turn_three_images": (
        [
            Turn("system", ["Be brief."]),
            Turn("user", ["What is in", IMAGE, "and", IMAGE, "?"]),
            Turn("assistant", ["two shapes"]),
            Turn("user", ["And here?", IMAGE]),
        ],
        True,
    ),
    "text_only": ([Turn("user", ["Describe it."])], True),
}


@pytest.fixture(scope="module", params=["idefics3", "smolvlm"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    save_tiny(request.param, path)
    return str(path), import_idefics3(str(path))


def _messages(turns):
    return [
        {"role": t.role, "content": [s if isinstance(s, dict) else {"type": "text", "text": s} for s in t.content]}
        for t in turns
    ]


def _theirs(processor, turns, add_generation_prompt, split, ims):
    """transformers' way: ``processor.apply_chat_template(..., tokenize=True)`` with the images."""
    kwargs = {"do_image_splitting": split, **({"images": ims} if ims else {})}
    out = processor.apply_chat_template(
        _messages(turns),
        add_generation_prompt=add_generation_prompt,
        tokenize=True,
        return_dict=True,
        processor_kwargs=kwargs,
    )
    return out["input_ids"][0]


@pytest.mark.parametrize("split", [True, False])
def test_imported_processors_give_the_checkpoint_processor_ids(checkpoint, split):
    """Images of several sizes and aspects (tiled by resolution), multi-turn, system turn, generation prompt."""
    path, vlm = checkpoint
    theirs = AutoProcessor.from_pretrained(path)
    settings = Idefics3ProcessorSettings.from_pretrained(path)
    processors = [settings.vlm_processor(vlm), VLMProcessor.from_model(vlm, max_image_size=settings.max_image_size)]
    for offset, (turns, add_generation_prompt) in enumerate(CONVERSATIONS.values()):
        count = sum(segment == IMAGE for turn in turns for segment in turn.content)
        ims = images()[offset : offset + count]
        expected = _theirs(theirs, turns, add_generation_prompt, split, ims)
        views = 0
        if ims:  # the real frames of transformers' image processor: every tile and global view
            masks = theirs.image_processor([ims], do_image_splitting=split, return_tensors="pt")["pixel_attention_mask"]
            views = int(masks[0].flatten(1).any(1).sum())
        for processor in processors:
            sample = processor(ims, turns, add_generation_prompt=add_generation_prompt, split_images=split)
            assert sample["input_ids"].tolist() == expected
            assert len(sample["pixel_values"]) == views


def test_answer_only_labels_follow_the_checkpoint_template(checkpoint):
    path, vlm = checkpoint
    processor = Idefics3ProcessorSettings.from_pretrained(path).vlm_processor(vlm)
    turns, _ = CONVERSATIONS["multi_turn_three_images"]
    sample = processor(images()[:3], [*turns, Turn("assistant", ["red"])], split_images=True)
    labels = [label for label in sample["labels"].tolist() if label != -100]
    assert vlm.tokenizer.decode(labels) == " two shapes<end_of_utterance> red<end_of_utterance>"


@pytest.mark.parametrize("format", ["conversation", "pair"])
def test_shard_pipeline_renders_an_imported_model_with_its_text(checkpoint, format):
    """MixtureDataModule tiles and writes image text as the checkpoint's processor (the model's tile_size)."""
    from vlmkit.data.formats import to_turns
    from vlmkit.data.mixture_datamodule import MixtureDataModule
    from vlmkit.data.synthetic_sources import SyntheticSource, synthetic_record

    path, vlm = checkpoint
    settings = Idefics3ProcessorSettings.from_pretrained(path)
    source = SyntheticSource(format, eval_image_splitting=True, max_image_size=settings.max_image_size)
    data = MixtureDataModule(sources=[source])
    data.connect(vlm)
    renderer = data.renderer(data.sources[0], train=False)
    record = synthetic_record(format, seed=0, index=1)
    turns, _ = to_turns(record)
    theirs = AutoProcessor.from_pretrained(path)
    if format == "pair":  # plain text (pretraining): given to the processor as it is
        text = "".join("<image>" if s == IMAGE else s for s in turns[0].content)
        expected = theirs(text=text, images=record.images)["input_ids"][0]
    else:
        expected = _theirs(theirs, turns, False, True, record.images)
    assert renderer(record)["input_ids"].tolist() == expected


CHATML_WITH_IMAGES = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML layout (SmolLM2-Instruct's turns) that places image segments: not Idefics2's User:/Assistant: text."""
STRING_CONTENT_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}{{ message['content'] }}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
)
"""A text LM's own template, written for string contents: it cannot place images."""


def test_any_template_that_places_images_renders_as_the_processor(checkpoint):
    """A model given another chat template (ChatML) gets the SmolVLM processor's ids with that template."""
    import copy

    path, vlm = checkpoint
    settings = Idefics3ProcessorSettings.from_pretrained(path)
    tokens = vlm.num_image_tokens(settings.tile_size, settings.tile_size)
    theirs = settings.processor(copy.deepcopy(vlm.tokenizer), tokens, CHATML_WITH_IMAGES)
    ours = VLMProcessor(
        vlm.tokenizer,
        settings.image_processor(vlm.vision_encoder.patch_size),
        vlm.num_image_tokens,
        chat_template=CHATML_WITH_IMAGES,
        processor_rules="idefics3",
    )
    turns, add_generation_prompt = CONVERSATIONS["multi_turn_three_images"]
    expected = _theirs(theirs, turns, add_generation_prompt, True, images()[:3])
    assert ours(images()[:3], turns, add_generation_prompt=True, split_images=True)["input_ids"].tolist() == expected
    answered = ours(images()[:3], [*turns, Turn("assistant", ["red"])], split_images=True)
    labels = [label for label in answered["labels"].tolist() if label != -100]
    assert vlm.tokenizer.decode(labels) == "two shapes<|im_end|>red<|im_end|>"  # each answer and its end, no "\n"
    refusing = VLMProcessor(
        vlm.tokenizer,
        settings.image_processor(vlm.vision_encoder.patch_size),
        vlm.num_image_tokens,
        chat_template=STRING_CONTENT_CHATML,
        processor_rules="idefics3",
    )
    with pytest.raises(ValueError, match="rendered 0 <image> for 1 images"):
        refusing(images()[:1], [Turn("user", [IMAGE, "What is it?"])])
