"""The lmms-eval adapter, driven with requests shaped like lmms-eval's ``Instance.args``."""

import sys
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from vlmkit.interop.lmms_eval import VlmkitLMMSAdapter, lmms_eval_model


@pytest.fixture(scope="module")
def adapter(tiny_vlm):
    model = VlmkitLMMSAdapter(tiny_vlm, max_image_size=40, min_image_size=16, default_max_new_tokens=4)
    docs = {0: {"image": Image.new("RGB", (24, 16), (200, 0, 0))}, 1: {"image": Image.new("RGB", (16, 32), (0, 0, 9))}}
    model.task_dict = {"toy": {"val": docs}}
    return model


def visual(doc):
    return [doc["image"]]


def test_generate_until_equals_direct_generation(adapter, tiny_vlm):
    requests = [SimpleNamespace(args=("What color?", {"max_new_tokens": 3}, visual, i, "toy", "val")) for i in (0, 1)]
    answers = adapter.generate_until(requests)
    for doc_id, answer in zip((0, 1), answers):
        batch = adapter._prompt([adapter.task_dict["toy"]["val"][doc_id]["image"]], "What color?")
        ids = tiny_vlm.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], max_new_tokens=3)
        assert answer == tiny_vlm.tokenizer.decode(ids[0], skip_special_tokens=True).strip()


def test_until_strings_cut_the_answer(adapter, tiny_vlm):
    args = ("What color?", {"max_new_tokens": 4}, visual, 0, "toy", "val")
    free = adapter.generate_until([SimpleNamespace(args=args)])[0]
    assert free, "the tiny model generates some text"
    cut = adapter.generate_until(
        [SimpleNamespace(args=(*args[:1], {"max_new_tokens": 4, "until": free[1:]}, *args[2:]))]
    )[0]
    assert cut == free[:1].strip()


def test_loglikelihood_scores_the_continuation(adapter, tiny_vlm):
    greedy = adapter.generate_until([SimpleNamespace(args=("Q?", {"max_new_tokens": 2}, visual, 0, "toy", "val"))])[0]
    continuation = " " + greedy if not greedy.startswith(" ") else greedy
    ids = tiny_vlm.tokenizer.encode(continuation, add_special_tokens=False)
    results = adapter.loglikelihood(
        [
            SimpleNamespace(args=("Q?", continuation, visual, 0, "toy", "val")),
            SimpleNamespace(args=("Q?", lambda doc: " zzz qq", visual, 0, "toy", "val")),
        ]
    )
    batch = adapter._prompt([adapter.task_dict["toy"]["val"][0]["image"]], "Q?")
    full = torch.cat([batch["input_ids"], torch.tensor([ids])], 1)
    logits = tiny_vlm(full, None, batch["pixel_values"]).logits[0, -len(ids) - 1 : -1].log_softmax(-1)
    expected = logits.gather(-1, torch.tensor(ids)[:, None]).sum().item()
    assert results[0][0] == pytest.approx(expected, abs=1e-4)
    assert results[1][0] < 0 and results[1][1] is False


def test_non_image_visuals_and_missing_lmms_eval_are_reported(adapter, tiny_vlm, monkeypatch):
    request = SimpleNamespace(args=("Q?", {}, lambda doc: ["video.mp4"], 1, "toy", "val"))
    with pytest.raises(ValueError, match=r"task 'toy' doc 1: only images are supported, got \['str'\]"):
        adapter.generate_until([request])
    monkeypatch.setitem(sys.modules, "lmms_eval", None)
    monkeypatch.setitem(sys.modules, "lmms_eval.api.model", None)
    with pytest.raises(ImportError, match="pip install lmms-eval"):
        lmms_eval_model(tiny_vlm)


def test_the_old_module_path_still_works_with_a_warning():
    import importlib

    sys.modules.pop("vlmkit.eval.lmms_eval_adapter", None)
    with pytest.warns(FutureWarning, match="vlmkit.eval.lmms_eval_adapter is now vlmkit.interop.lmms_eval"):
        old = importlib.import_module("vlmkit.eval.lmms_eval_adapter")
    assert old.lmms_eval_model is lmms_eval_model
