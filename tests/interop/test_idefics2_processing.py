"""An imported Idefics2 checkpoint keeps its text: the token ids of its own ``Idefics2Processor``."""

import copy
import json

import pytest
from tiny_idefics2 import images, save_tiny_idefics2
from tiny_tokenizers import llama_tokenizer
from transformers import AutoProcessor

from vlmkit.data.processor import VLMProcessor
from vlmkit.interop import IDEFICS2_CHAT_TEMPLATE, Idefics2ProcessorSettings, import_idefics2
from vlmkit.interop.idefics2_processing import checkpoint_chat_template
from vlmkit.text import Turn

IMAGE = {"type": "image"}
CONVERSATIONS = [
    ([Turn("user", [IMAGE, "What is it?"]), Turn("assistant", ["a cat"])], False),
    ([Turn("user", ["What is in", IMAGE, "and", IMAGE, "?"])], True),
    ([Turn("user", ["Describe it."])], True),
]


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory):
    """A tiny Idefics2 with a Llama tokenizer that adds BOS (as Mistral's)."""
    path = tmp_path_factory.mktemp("idefics2_llama")
    save_tiny_idefics2(path, tokenizer=llama_tokenizer(add_bos_token=True))
    return str(path), import_idefics2(str(path))


def _theirs(processor, turns, add_generation_prompt, split):
    processor = copy.deepcopy(processor)
    processor.image_processor.do_image_splitting = split
    messages = [
        {"role": t.role, "content": [s if isinstance(s, dict) else {"type": "text", "text": s} for s in t.content]}
        for t in turns
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    count = text.count("<image>")
    return processor(text=text, images=images()[:count] or None)["input_ids"][0]


@pytest.mark.parametrize("split", [False, True])
def test_imported_processors_give_the_checkpoint_processor_ids(llama_checkpoint, split):
    path, vlm = llama_checkpoint
    theirs_processor = AutoProcessor.from_pretrained(path)
    settings = Idefics2ProcessorSettings.from_pretrained(path)
    processors = [settings.vlm_processor(vlm), VLMProcessor.from_model(vlm, max_image_size=48, min_image_size=24)]
    for turns, add_generation_prompt in CONVERSATIONS:
        expected = _theirs(theirs_processor, turns, add_generation_prompt, split)
        count = sum(segment == IMAGE for turn in turns for segment in turn.content)
        for processor in processors:
            sample = processor(images()[:count], turns, add_generation_prompt=add_generation_prompt, split_images=split)
            assert sample["input_ids"].tolist() == expected


def test_import_keeps_the_checkpoint_chat_template_and_stops(llama_checkpoint, tmp_path, caplog):
    path, vlm = llama_checkpoint
    assert vlm.chat_template == IDEFICS2_CHAT_TEMPLATE == AutoProcessor.from_pretrained(path).chat_template
    tokenizer = vlm.tokenizer
    assert vlm.stop_token_ids == (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_utterance>"))

    save_tiny_idefics2(tmp_path)  # a fine-tuned checkpoint with a template of its own
    custom = IDEFICS2_CHAT_TEMPLATE.replace("'Assistant:'", "'Bot:'")
    (tmp_path / "chat_template.jinja").write_text(custom)
    assert checkpoint_chat_template(str(tmp_path)) == custom
    for name in ("chat_template.jinja", "processor_config.json", "tokenizer_config.json"):  # no template anywhere
        if name == "chat_template.jinja":
            (tmp_path / name).unlink()
        else:
            config = json.loads((tmp_path / name).read_text())
            config.pop("chat_template", None)
            (tmp_path / name).write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        assert checkpoint_chat_template(str(tmp_path)) == IDEFICS2_CHAT_TEMPLATE
    assert "no chat template" in caplog.text


@pytest.mark.parametrize("format", ["conversation", "pair"])
def test_shard_pipeline_renders_an_imported_model_with_its_text(llama_checkpoint, format):
    from vlmkit.data.formats import to_turns
    from vlmkit.data.mixture_datamodule import MixtureDataModule
    from vlmkit.data.synthetic_sources import SyntheticSource, synthetic_record

    path, vlm = llama_checkpoint
    data = MixtureDataModule(sources=[SyntheticSource(format)])
    data.connect(vlm)
    renderer = data.renderer(data.sources[0], train=False)
    record = synthetic_record(format, seed=0, index=1)
    turns, _ = to_turns(record)
    if format == "pair":  # plain text (pretraining): given to the processor as it is
        text = "".join("<image>" if s == IMAGE else s for s in turns[0].content)
        expected = AutoProcessor.from_pretrained(path)(text=text, images=record.images)["input_ids"][0]
    else:
        expected = _theirs(AutoProcessor.from_pretrained(path), turns, False, split=False)
    assert renderer(record)["input_ids"].tolist() == expected
