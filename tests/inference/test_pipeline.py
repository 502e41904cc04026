"""``VLMPipeline`` and ``ChatSession``: one call from image files to text, streaming, sampling, multi-turn history."""

import pytest
import torch
from PIL import Image
from tiny_models import tiny_composition

from vlmkit.data.collate import VLMCollator
from vlmkit.data.processor import VLMProcessor
from vlmkit.errors import UserInputError
from vlmkit.inference import VLMPipeline
from vlmkit.model import VisionLanguageModel
from vlmkit.text.template import Turn


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return VLMPipeline(VisionLanguageModel.from_config(tiny_composition()), max_image_size=32, min_image_size=16)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, (size, colour) in enumerate([((40, 24), (200, 30, 30)), ((24, 32), (20, 40, 220))]):
        path = folder / f"image{i}.png"
        Image.new("RGB", size, colour).save(path)
        paths.append(str(path))
    return paths


def _by_hand(vlm, images, turns, max_new_tokens):
    """The ~9 lines the pipeline replaces: processor, turns, collator, generate, decode."""
    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    sample = processor(images, turns, add_generation_prompt=True)
    batch = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size, padding_side="left")([sample])
    ids = vlm.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"],
                       max_new_tokens=max_new_tokens)  # fmt: skip
    return ids[0], vlm.tokenizer.decode(ids[0], skip_special_tokens=True).strip()


def test_the_answer_is_the_models_greedy_generation_decoded(pipe, image_files):
    turns = [Turn("user", [{"type": "image"}, {"type": "image"}, "What colour is the shape?"])]
    ids, expected = _by_hand(pipe.vlm, image_files, turns, 12)
    pieces = []
    result = pipe.generate(turns, image_files, max_new_tokens=12, on_text=pieces.append)
    assert torch.equal(result.token_ids, ids) and result.text == expected
    assert pipe(image_files, "What colour is the shape?", max_new_tokens=12) == expected
    assert "".join(pieces) == expected and len(pieces) > 1  # streamed piece by piece


def test_sampling_with_a_seed_reproduces(pipe, image_files):
    options = {"max_new_tokens": 10, "do_sample": True, "temperature": 1.5}
    first = pipe(image_files[0], "Describe", seed=1, **options)
    assert pipe(image_files[0], "Describe", seed=1, **options) == first
    assert pipe(image_files[0], "Describe", seed=2, **options) != first
    greedy = pipe(image_files[0], "Describe", max_new_tokens=10)
    assert pipe(image_files[0], "Describe", seed=3, top_k=1, **options) == greedy  # top-1 sampling is greedy


def test_a_chat_answers_with_its_history(pipe, image_files):
    session = pipe.chat_session(max_new_tokens=6)
    first = session.ask("What colour is it?", images=image_files[0])
    second = session.ask("And this one?", images=image_files[1])
    prompt = pipe.vlm.tokenizer.decode(session.last.prompt_ids)
    assert prompt.index("What colour is it?") < prompt.index(first) < prompt.index("And this one?")
    assert prompt.count("<fake_token_around_image>") == 4  # both images, each between two markers
    turns = [Turn("user", [{"type": "image"}, "What colour is it?"]), Turn("assistant", [first]),
             Turn("user", [{"type": "image"}, "And this one?"])]  # fmt: skip
    _, expected = _by_hand(pipe.vlm, image_files, turns, 6)
    assert second == expected
    session.reset()
    session.ask("Hello")
    assert "What colour" not in pipe.vlm.tokenizer.decode(session.last.prompt_ids) and session.images == []


def test_split_images_gives_every_image_its_crops(pipe, image_files):
    plain = pipe.generate([Turn("user", [{"type": "image"}, "Hi"])], image_files[:1], max_new_tokens=1)
    split = pipe.generate([Turn("user", [{"type": "image"}, "Hi"])], image_files[:1], max_new_tokens=1,
                          split_images=True)  # fmt: skip
    image_token = pipe.vlm.image_token_id
    assert (split.prompt_ids == image_token).sum() == 5 * (plain.prompt_ids == image_token).sum()


def test_a_missing_image_is_one_line_naming_it(pipe, tmp_path):
    with pytest.raises(UserInputError, match="nothere.png"):
        pipe(str(tmp_path / "nothere.png"), "What is it?")


@pytest.mark.integration
def test_an_imported_idefics2_answers_as_transformers_generates(tmp_path):
    from tiny_idefics2 import images, save_tiny_idefics2

    reference, processor = save_tiny_idefics2(tmp_path)
    pipe = VLMPipeline.from_pretrained(tmp_path)
    assert pipe.trained.kind == "idefics2"
    image = images()[0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(text=text, images=[image], return_tensors="pt")
    stops = list(pipe.vlm.stop_token_ids)
    with torch.no_grad():
        expected = reference.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=stops, min_length=0)
    result = pipe.generate([Turn("user", [{"type": "image"}, "Describe"])], [image], max_new_tokens=8)
    assert result.prompt_ids.tolist() == batch["input_ids"][0].tolist()
    assert result.token_ids.tolist() == expected[0, batch["input_ids"].shape[1] :].tolist()


@pytest.mark.integration
@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_an_imported_idefics3_answers_as_transformers_generates(tmp_path, family):
    from tiny_idefics3 import images, save_tiny

    reference, processor = save_tiny(family, tmp_path)
    pipe = VLMPipeline.from_pretrained(tmp_path)
    assert pipe.trained.kind == "idefics3"
    image = images()[0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(text=text, images=[image], return_tensors="pt", add_special_tokens=False)  # BOS is in the text
    stops = list(pipe.vlm.stop_token_ids)
    with torch.no_grad():
        expected = reference.generate(**batch, max_new_tokens=8, do_sample=False, eos_token_id=stops, min_length=0)
    result = pipe.generate([Turn("user", [{"type": "image"}, "Describe"])], [image], max_new_tokens=8)
    assert result.prompt_ids.tolist() == batch["input_ids"][0].tolist()
    assert result.token_ids.tolist() == expected[0, batch["input_ids"].shape[1] :].tolist()
