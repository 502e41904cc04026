"""The learning path in ``examples/``: every lesson runs (fast mode) and what it prints as shown holds.

Each lesson runs in-process with ``runpy`` (``VLMKIT_LESSON_FAST=1``: fewer steps and samples;
``VLMKIT_EXAMPLES_OUT``: figures into a temporary folder) and the test checks the values the lesson's text states,
read from the lesson's own namespace, and that its figures were written. Fast mode cannot show what needs the full
run (lesson 5's accuracy above the majority baseline); those claims are measured by running the lesson itself
(``examples/README.md``).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LESSONS = sorted(p.stem for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


def run_lesson(name: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run ``examples/<name>.py`` in fast mode with figures in ``out``; return its global namespace.

    What a lesson changes for the whole process (environment variables such as Lightning's ``PL_GLOBAL_SEED``,
    transformers' log level and progress bars, the global RNG) is restored afterwards, so later tests see none of it.
    """
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("VLMKIT_LESSON_FAST", "1")
    monkeypatch.setenv("VLMKIT_EXAMPLES_OUT", str(out))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    sys.modules.pop("_lesson", None)  # re-read the environment
    environ, verbosity, bars = dict(os.environ), hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    rng = torch.random.get_rng_state()
    try:
        return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    finally:
        os.environ.clear()
        os.environ.update(environ)
        hf_logging.set_verbosity(verbosity)
        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        torch.random.set_rng_state(rng)
        sys.modules.pop("_lesson", None)


def assert_figures(out: Path, *names: str) -> None:
    for name in names:
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, f"{name} was not written"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"


def test_the_path_has_ten_numbered_lessons_each_listed_in_the_readme():
    assert [name[:2] for name in LESSONS] == [f"{i:02d}" for i in range(1, 11)]
    readme = (EXAMPLES / "README.md").read_text()
    for name in LESSONS:
        assert f"{name}.py" in readme, f"{name} is missing from examples/README.md"
        text = (EXAMPLES / f"{name}.py").read_text()
        assert text.startswith("# %% [markdown]\n# # Lesson "), f"{name}: not in jupytext percent format"
        assert "\n# %%\n" in text


@pytest.mark.integration  # builds models: seconds
def test_01_images_to_patches(tmp_path, monkeypatch):
    ns = run_lesson("01_images_to_patches", tmp_path, monkeypatch)
    patch = ns["PATCH"]
    for image, pixels, mask, real in zip(ns["images"], ns["processed"], ns["patch_mask"], ns["real"]):
        h, w = pixels.shape[1:]
        assert h % patch == 0 and w % patch == 0
        assert abs(w / h - image.width / image.height) < 0.25  # aspect ratio kept up to rounding to the patch
        assert int(real) == (h // patch) * (w // patch) == int(mask[: h // patch, : w // patch].sum())
    assert tuple(ns["pixel_values"].shape[2:]) == (
        max(p.shape[1] for p in ns["processed"]),
        max(p.shape[2] for p in ns["processed"]),
    )
    rows = {size: (kept, kept_patches, square) for size, kept, kept_patches, square in ns["paper_table"]}
    assert all(square == 27 * 27 for _, _, square in rows.values())
    assert rows[(4000, 3000)][0] == (980, 728)  # longest side capped at 980, multiples of 14
    assert rows[(2000, 300)][1] < 729 < rows[(1024, 768)][1]  # a strip of text is cheaper than the square
    assert_figures(tmp_path, "01_patches.png")


@pytest.mark.integration  # builds models: seconds
def test_02_vision_encoders(tmp_path, monkeypatch):
    ns = run_lesson("02_vision_encoders", tmp_path, monkeypatch)
    assert set(ns["max_diff"]) == {"interpolate", "bucket", "bucket, patch_packing"}
    assert all(diff < 1e-5 for diff in ns["max_diff"].values())  # "the same features"
    assert ns["no_mask_diff"] > 1e-2  # without the mask they differ
    ids = ns["ids"]
    assert int(ids.max()) < ns["side"] ** 2 and len(set(ids.tolist())) < ns["rows"] * ns["cols"]
    assert_figures(tmp_path, "02_positions.png")


@pytest.mark.integration  # builds models: seconds
def test_03_connectors(tmp_path, monkeypatch):
    ns = run_lesson("03_connectors", tmp_path, monkeypatch)
    toy_tokens = {name: tokens for name, (tokens, _, _) in ns["toy"].items()}
    paper_tokens = {name: tokens for name, (tokens, _, _) in ns["paper"].items()}
    assert toy_tokens == {
        "linear": 16,
        "mapping network": 16,
        "perceiver": 16,
        "MLP (no pooling)": 81,
        "pixel shuffle r=3": 9,
    }
    assert paper_tokens["perceiver"] == 64 and paper_tokens["MLP (no pooling)"] == 729
    assert paper_tokens["pixel shuffle r=3"] == 81
    assert all(params > 0 and flops > 0 for _, params, flops in ns["paper"].values())
    assert ns["padding_attention"] == 0.0  # padding gets no attention
    assert_figures(tmp_path, "03_perceiver_attention.png")


@pytest.mark.integration  # builds models: seconds
def test_04_fusions(tmp_path, monkeypatch):
    ns = run_lesson("04_fusions", tmp_path, monkeypatch)
    fa, ca = ns["models"]["fully autoregressive"], ns["models"]["cross-attention"]
    fa_ids, ca_ids = ns["rendered"]["fully autoregressive"]["input_ids"], ns["rendered"]["cross-attention"]["input_ids"]
    assert int((fa_ids == fa.image_token_id).sum()) == 2 * 8  # 8 latents per image, spliced
    assert int((ca_ids == ca.image_token_id).sum()) == 2  # one marker per image
    assert ns["gate_zero_diff"] <= 1e-6  # closed gates: the LM alone
    assert ns["before_diff"] <= 1e-6 < 1e-3 < ns["after_diff"]
    assert ns["sees"]["preceding"][-1].tolist() == [False, True]
    assert ns["sees"]["all_preceding"][-1].tolist() == [True, True]
    assert not ns["sees"]["preceding"][: ns["first_image"]].any()
    assert_figures(tmp_path, "04_cross_attention.png")


@pytest.mark.integration  # builds models: seconds
def test_05_train_synthetic(tmp_path, monkeypatch):
    ns = run_lesson("05_train_synthetic", tmp_path, monkeypatch)
    assert len(ns["curves"].loss) == ns["STEPS"]
    assert ns["last_loss"] < ns["first_loss"]  # fast mode shows the loss falling, not the final accuracy
    assert ns["curves"].accuracy and all(0.0 <= a <= 1.0 for _, a in ns["curves"].accuracy)
    assert 0.0 < ns["baseline"] < 1.0
    predictions = ns["predictions"]
    assert len(predictions) == ns["NUM_PREDICT"]
    assert all(r["question"].startswith("What color is the") for r in predictions)
    assert_figures(tmp_path, "05_curves.png", "05_answers.png")


@pytest.mark.integration  # builds models: seconds
def test_06_image_splitting(tmp_path, monkeypatch):
    ns = run_lesson("06_image_splitting", tmp_path, monkeypatch)
    assert len(ns["views"]) == 5 and len({tuple(v.shape) for v in ns["views"]}) == 1
    for split in (False, True):  # the budget is what the processor renders
        assert ns["placeholders"][split] == ns["budgets"][split].visual_tokens
    assert ns["budgets"][True].visual_tokens == 5 * ns["budgets"][False].visual_tokens
    for _, perceiver, per_patch, tiled in ns["paper_rows"]:
        assert perceiver == [64, 320]
        assert per_patch[1] == 5 * per_patch[0] and tiled % 169 == 0  # 169 tokens per Idefics3 tile
    assert_figures(tmp_path, "06_split.png")


@pytest.mark.integration  # builds models: seconds
def test_07_fine_tuning(tmp_path, monkeypatch):
    ns = run_lesson("07_fine_tuning", tmp_path, monkeypatch)
    results = ns["results"]
    assert {"frozen", "full", "lora", "dora"} <= set(results)
    for mode, result in results.items():
        assert result["changed_outside_trainable"] == 0, mode  # frozen weights never move
        assert result["changed"] > 0, mode
    assert results["full"]["trainable"] == results["full"]["total"]
    assert results["frozen"]["trainable"] < results["lora"]["trainable"] < results["full"]["trainable"]
    assert results["lora"]["adapters_changed"] and results["dora"]["adapters_changed"]
    if "qlora" in results:
        assert results["qlora"]["weight_bytes"] < results["lora"]["weight_bytes"]
        assert results["qlora"]["trainable"] == results["lora"]["trainable"]
    memory = ns["memory"]
    assert memory["full"] > memory["LoRA"] > memory["QLoRA"]
    assert ns["lora_params"] < 0.01 * ns["backbones"]
    assert_figures(tmp_path, "07_memory.png")


@pytest.mark.integration  # builds models: seconds
def test_08_evaluation(tmp_path, monkeypatch):
    ns = run_lesson("08_evaluation", tmp_path, monkeypatch)
    assert ns["vqa_scores"] == pytest.approx([1.0, 1.0, 1.0, 0.6, 0.0])
    assert ns["anls_scores"] == pytest.approx([1.0, 1 - 1 / 6, 0.8, 0.0])
    assert float(ns["vqa_metric"].compute()) == pytest.approx(sum(ns["vqa_scores"]) / 5)
    assert ns["text"].count("Answer:") == 3 and ns["text"].rstrip().endswith("Answer:")  # 2 shots + the query
    assert len(ns["images"]) == 3 and isinstance(ns["generated"][0], str)
    assert ns["cider"] > 0
    assert_figures(tmp_path, "08_metrics.png")


@pytest.mark.integration  # builds models: seconds
def test_09_data(tmp_path, monkeypatch):
    ns = run_lesson("09_data", tmp_path, monkeypatch)
    manifest = ns["manifest"]
    assert manifest["num_samples"] == sum(s["num_samples"] for s in manifest["shards"]) == ns["NUM_SAMPLES"]
    assert all(s["num_samples"] <= 10 for s in manifest["shards"])
    assert set(ns["shares"]) == set(ns["weights"])
    assert ns["fill"](ns["packed_batches"]) > ns["fill"](ns["padded_batches"])
    assert ns["longest_row"] <= 384
    assert ns["packing_diff"] < 1e-5  # a packed sample's logits are its own
    assert_figures(tmp_path, "09_packing.png")


@pytest.mark.integration  # builds models: seconds
def test_10_real_checkpoints(tmp_path, monkeypatch):
    ns = run_lesson("10_real_checkpoints", tmp_path, monkeypatch)
    assert ns["logits_diff"] < 1e-4
    assert ns["generation_equal"]
    assert ns["equal"] == len(ns["original"]) and not any(ns["info"].values())
    assert_figures(tmp_path, "10_logits.png")
