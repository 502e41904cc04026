"""``vlmkit generate`` / ``vlmkit chat`` on a model trained by ``vlmkit fit``; ``vlmkit export --format pretrained``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlmkit.cli import build_cli, main
from vlmkit.data.collate import VLMCollator
from vlmkit.data.processor import VLMProcessor
from vlmkit.model import VisionLanguageModel
from vlmkit.text.template import Turn
from vlmkit.training import VLMModule

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
SMALL = ["--data.init_args.num_train=8", "--data.init_args.num_val=4", "--data.init_args.batch_size=4"]
FIT = ["fit", "--config", QUICKSTART, *SMALL, "--trainer.max_steps=2", "--trainer.val_check_interval=2"]
FIT += ["--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quickstart checkpoint of `vlmkit fit` (2 steps), its model, two image files, and the fit's CLI."""
    root = tmp_path_factory.mktemp("quickstart")
    cli = build_cli([*FIT, f"--trainer.default_root_dir={root}"])
    ckpt = Path(cli.trainer.checkpoint_callback.last_model_path)  # <root>/checkpoints/last.ckpt
    images = []
    for i, (size, colour) in enumerate([((48, 32), (220, 20, 20)), ((32, 56), (20, 20, 220))]):
        images.append(str(root / f"shape{i}.png"))
        Image.new("RGB", size, colour).save(images[-1])
    vlm = VLMModule.load_from_checkpoint(ckpt, weights_only=False).vlm.eval()
    return ckpt, vlm, images, cli


def _greedy(vlm, images, turns, max_new_tokens):
    """Greedy answer by hand, with the quickstart data's image sizes (64 / 32)."""
    sample = VLMProcessor.from_model(vlm, 64, 32)(images, turns, add_generation_prompt=True)
    batch = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size, padding_side="left")([sample])
    ids = vlm.generate(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"],
                       max_new_tokens=max_new_tokens)  # fmt: skip
    return vlm.tokenizer.decode(ids[0], skip_special_tokens=True).strip()


def _vlmkit(*args, stdin=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "vlmkit", *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


@pytest.mark.integration
def test_generate_prints_the_greedy_answer_of_a_checkpoint(trained):
    ckpt, vlm, images, _ = trained
    prompt = "What color is the shape?"
    run = _vlmkit("generate", "--checkpoint", str(ckpt), "--image", images[0], "--prompt", prompt,
                  "--max_new_tokens", "8")  # fmt: skip
    assert run.returncode == 0, run.stderr
    expected = _greedy(vlm, images[:1], [Turn("user", [{"type": "image"}, prompt])], 8)
    assert run.stdout.strip() == expected and expected


@pytest.mark.integration
def test_chat_keeps_the_history_of_a_save_pretrained_folder(trained, tmp_path):
    ckpt, vlm, images, _ = trained
    folder = tmp_path / "pretrained"
    main(["export", "--config", QUICKSTART, *SMALL, "--ckpt_path", str(ckpt), "--output_dir", str(folder),
          "--format", "pretrained"])  # fmt: skip
    assert "## Training recipe" in (folder / "README.md").read_text()
    stdin = f"/image {images[0]}\nWhat color is it?\nAnd the shape?\n/reset\nWhere is it?\n/quit\nnot read\n"
    run = _vlmkit("chat", "--checkpoint", str(folder), "--max_new_tokens", "6", "--show_prompt", stdin=stdin)
    assert run.returncode == 0, run.stderr
    answers = run.stdout.splitlines()
    assert len(answers) == 3
    first = [Turn("user", [{"type": "image"}, "What color is it?"])]
    second = [*first, Turn("assistant", [answers[0]]), Turn("user", ["And the shape?"])]
    assert answers[0] == _greedy(vlm, images[:1], first, 6)
    assert answers[1] == _greedy(vlm, images[:1], second, 6)  # the first turn (and its image) is in the prompt
    prompts = [line for line in run.stderr.splitlines() if line.startswith("<s>User:")]
    assert "What color is it?" in prompts[1] and "What color is it?" not in prompts[2]  # /reset forgot it


@pytest.mark.integration
def test_sampling_with_a_seed_reproduces_and_options_reach_generate(trained, capsys):
    ckpt, _, images, _ = trained
    args = ["generate", "--checkpoint", str(ckpt), "--image", images[1], "--prompt", "Describe",
            "--max_new_tokens", "8", "--temperature", "2.0", "--top_k", "50", "--no_stream"]  # fmt: skip
    answers = []
    for seed in (1, 1, 2):
        main([*args, "--seed", str(seed)])
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1] != answers[2]


@pytest.mark.integration
def test_exporting_the_quickstart_as_idefics2_names_the_formats_it_can_go_to(trained, tmp_path):
    ckpt, _, _, _ = trained
    with pytest.raises(SystemExit) as exit_info:
        main(["export-idefics2", "--config", QUICKSTART, *SMALL, "--ckpt_path", str(ckpt),
              "--output_dir", str(tmp_path)])  # fmt: skip
    message = str(exit_info.value.code)
    assert message.startswith("vlmkit: error: not exportable as Idefics2") and "\n" not in message
    assert "--adapters_only" in message and "--format pretrained" in message


@pytest.mark.integration
def test_a_model_trained_by_vlmkit_fit_saves_and_loads_without_its_recipe(trained, tmp_path):
    ckpt, vlm, images, cli = trained
    fitted = cli.model.vlm.eval()  # its VLMModule gave it the recipe's composition
    assert fitted.config["init_args"]["connector"]["class_path"] == "vlmkit.connectors.PerceiverResampler"
    fitted.save_pretrained(tmp_path)
    loaded = VisionLanguageModel.from_pretrained(tmp_path)
    turns = [Turn("user", [{"type": "image"}, "What color is the shape?"])]
    sample = VLMProcessor.from_model(vlm, 64, 32)(images[:1], turns, add_generation_prompt=True)
    batch = VLMCollator(vlm.tokenizer.pad_token_id, 8)([sample])
    args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
    with torch.no_grad():
        assert torch.equal(loaded(*args).logits, vlm(*args).logits)


def test_a_missing_image_stops_before_the_model_is_built(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--checkpoint", str(tmp_path / "none.ckpt"), "--image", str(tmp_path / "a.png"),
              "--prompt", "hi"])  # fmt: skip
    assert str(exit_info.value.code) == f"vlmkit: error: image not found: {tmp_path / 'a.png'}"


def test_a_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--checkpoint", str(tmp_path / "none.ckpt"), "--prompt", "hi"])
    assert str(exit_info.value.code).startswith(f"vlmkit: error: checkpoint not found: {tmp_path / 'none.ckpt'}")
