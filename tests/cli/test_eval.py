"""``vlmkit eval``: lmms-eval tasks on a trained model; a one-line message when lmms-eval is not installed."""

import json
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType, SimpleNamespace

import pytest
import torch
from PIL import Image
from tiny_models import tiny_composition

from vlmkit.cli import main
from vlmkit.cli.eval import results_table
from vlmkit.inference import VLMPipeline
from vlmkit.model import VisionLanguageModel


def test_without_lmms_eval_the_message_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # not installed
    with pytest.raises(SystemExit) as exit_info:  # checked before the (missing) checkpoint is looked at
        main(["eval", "--checkpoint", str(tmp_path / "none.ckpt"), "--tasks", "mme"])
    assert str(exit_info.value.code) == (
        "vlmkit: error: vlmkit eval needs lmms-eval, which is not installed: pip install 'vlmkit[lmms]' "
        "(or pip install lmms-eval)"
    )


def fake_lmms_eval(monkeypatch, image, calls):
    """An ``lmms_eval`` package whose ``simple_evaluate`` asks the model one question, as lmms-eval does."""

    class lmms:  # noqa: N801 (lmms-eval's name)
        def __init__(self):
            self.rank, self.world_size = 0, 1

    def simple_evaluate(model, tasks, limit=None, batch_size=None, log_samples=True):
        assert isinstance(model, lmms)
        model.task_dict["fake_vqa"] = {"test": [{"image": image, "question": "What color is the shape?"}]}
        request = SimpleNamespace(
            args=("What color is the shape?", {"max_new_tokens": 6}, lambda doc: [doc["image"]], 0, "fake_vqa", "test")
        )
        calls.append({"tasks": tasks, "limit": limit, "answers": model.generate_until([request])})
        return {"results": {t: {"alias": t, "exact_match,none": 0.25, "exact_match_stderr,none": 0.1} for t in tasks}}

    modules = {name: ModuleType(name) for name in ("lmms_eval", "lmms_eval.api", "lmms_eval.api.model",
                                                   "lmms_eval.evaluator")}  # fmt: skip
    modules["lmms_eval"].__spec__ = ModuleSpec("lmms_eval", None)
    modules["lmms_eval.api.model"].lmms = lmms
    modules["lmms_eval.evaluator"].simple_evaluate = simple_evaluate
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_tasks_run_on_the_checkpoint_and_the_model_answers_like_the_pipeline(monkeypatch, tmp_path, capsys):
    torch.manual_seed(0)
    vlm = VisionLanguageModel.from_config(tiny_composition())
    vlm.save_pretrained(tmp_path / "model", processor={"max_image_size": 32, "min_image_size": 16})
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    calls = []
    fake_lmms_eval(monkeypatch, image, calls)
    main(["eval", "--checkpoint", str(tmp_path / "model"), "--tasks", "mme, textvqa_val", "--limit", "8",
          "--output_dir", str(tmp_path / "eval")])  # fmt: skip
    expected = VLMPipeline(vlm, 32, 16)(image, "What color is the shape?", max_new_tokens=6)
    assert calls == [{"tasks": ["mme", "textvqa_val"], "limit": 8, "answers": [expected]}]
    out = capsys.readouterr().out
    assert "mme          exact_match  0.2500" in out and "stderr" not in out
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["results"]["textvqa_val"]["exact_match,none"] == 0.25


def test_the_results_table_lists_numbers_per_task():
    table = results_table({"mme": {"alias": "mme", "mme_cognition_score,none": 210.5, "stderr,none": 1.0}})
    assert table.splitlines() == ["task  metric                  value", "mme   mme_cognition_score  210.5000"]
