"""The README's commands run twice in a row mean the same thing; errors are one line (the console script, as a user
runs it, checking what it prints)."""

import subprocess
import sys
from pathlib import Path

import pytest

import vlmkit.connectors
from vlmkit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
SMALL = ["--data.init_args.num_train=16", "--data.init_args.num_val=4", "--data.init_args.num_predict=4",
         "--data.init_args.batch_size=4", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1",
         "--trainer.enable_progress_bar=false"]  # fmt: skip


def _vlmkit(*args):
    result = subprocess.run([sys.executable, "-m", "vlmkit", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def _final_line(output):
    lines = [line for line in output.splitlines() if line.startswith("vlmkit: checkpoint ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


@pytest.mark.integration
def test_fit_twice_resume_with_last_and_predict_next_to_the_checkpoint(tmp_path, capsys):
    root = tmp_path / "run"
    fit = ["fit", "--config", QUICKSTART, *SMALL, f"--trainer.default_root_dir={root}", "--trainer.max_steps=2"]
    last = root / "checkpoints" / "last.ckpt"
    first_output = _vlmkit(*fit)
    first = _final_line(first_output)
    assert first.startswith(f"vlmkit: checkpoint {last} (step 2); logs {root / 'lightning_logs' / 'version_0'}")
    output = _vlmkit(*fit)  # the same command again: a fresh run, same checkpoint path
    assert "holds an earlier run's checkpoints: this run starts from the recipe's weights and replaces them" in output
    second = _final_line(output)
    assert second.split("; logs")[0] == first.split("; logs")[0]
    assert sorted(p.name for p in last.parent.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]  # no last-v1.ckpt

    main([*fit[:-1], "--trainer.max_steps=4", "--ckpt_path", "last"])  # in process from here: faster
    output = "".join(capsys.readouterr())
    assert _final_line(output).startswith(f"vlmkit: checkpoint {last} (step 4)")  # resumed at step 2, not from 0
    assert "holds an earlier run's checkpoints" not in output

    main(["predict", "--config", QUICKSTART, *SMALL, "--ckpt_path", str(last)])
    output = "".join(capsys.readouterr())
    assert f"wrote 4 predictions to {root / 'predict' / 'predictions.jsonl'}" in output
    assert len((root / "predict" / "predictions.jsonl").read_text().splitlines()) == 4

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(root / "lightning_logs" / "version_0")).Reload()
    assert {"grad_norm/connector", "grad_norm/language_model", "grad_norm/total"} <= set(events.Tags()["scalars"])
    assert "samples/generations/text_summary" in events.Tags()["tensors"]
    assert "samples/image_0" in events.Tags()["images"]
    for noise in ("litlogger", "LeafSpec", "set_vital", "FLOPs", "TrainerFn", "past_key_values"):
        assert noise not in first_output


@pytest.mark.integration
def test_resuming_a_run_that_saved_nothing_is_one_line_before_anything_is_built(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, f"--trainer.default_root_dir={tmp_path}", "--ckpt_path", "last"])
    assert str(exit_info.value) == (
        f"vlmkit: error: --ckpt_path last: no checkpoint {tmp_path / 'checkpoints' / 'last.ckpt'} (the run folder is "
        f"trainer.default_root_dir={tmp_path}); run `vlmkit fit` without --ckpt_path to start a run"
    )
    assert "Seed set" not in "".join(capsys.readouterr())  # stopped before seeding and building
    missing = tmp_path / "stage1.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", QUICKSTART, f"--trainer.default_root_dir={tmp_path}", f"--model.init_from={missing}"])
    assert str(exit_info.value) == f"vlmkit: error: --model.init_from checkpoint not found: {missing}"
    assert "Seed set" not in "".join(capsys.readouterr())


@pytest.mark.integration
def test_a_misspelled_option_is_one_line_with_the_suggestion(capsys):
    for bad, expected in (
        (["--trainer.max_stpes", "3"], "unknown option --trainer.max_stpes; did you mean --trainer.max_steps"),
        (["--model.vlm.connector", "vlmkit.connectors.MLPProjektion"], "did you mean vlmkit.connectors.MLPProjection"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", QUICKSTART, *bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("vlmkit: error: ") and expected in err[-1], err
        assert not any(line.startswith("usage:") for line in err)


def test_list_names_every_recipe_and_every_connector(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    main(["list"])
    out = capsys.readouterr().out
    for recipe in (ROOT / "recipes").rglob("*.yaml"):
        assert f"  {recipe.relative_to(ROOT / 'recipes').as_posix()} " in out, recipe
    for name in vlmkit.connectors.__all__:
        if isinstance(getattr(vlmkit.connectors, name), type):
            assert f"vlmkit.connectors.{name}  " in out, name
    assert "quickstart.yaml" in out and "[fragment, on quickstart.yaml]" in out and "[ablation]" in out
    with pytest.raises(SystemExit):
        main(["list", "conectors"])
    assert "did you mean connectors?" in capsys.readouterr().err
