"""``vlmkit ablate`` from the command line: task listing, one-task runs, and a real smoke sweep end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmkit.ablate.cli import _seeds, main

ROOT = Path(__file__).resolve().parents[2]


def test_seeds_take_a_count_or_a_list():
    assert _seeds("3") == [0, 1, 2] and _seeds("4,7") == [4, 7]
    import argparse

    for bad in ("x", "1,1", "-1,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
            _seeds(bad)


def test_list_tasks_numbers_arm_seed_pairs_for_a_job_array(tiny_spec, tmp_path, capsys):
    assert main(["--config", str(tiny_spec), "--output", str(tmp_path / "out"), "--list-tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "6 tasks (--task-index 0..5)"
    assert lines[1].split() == ["0", "tiny/a/seed0", "pending"] and lines[6].split() == ["5", "tiny/b/seed2", "pending"]
    assert (
        main(["--config", str(tiny_spec), "--output", str(tmp_path), "--only", "b", "--seeds", "5", "--list-tasks"])
        == 0
    )
    assert capsys.readouterr().out.splitlines()[0] == "5 tasks (--task-index 0..4)"


def test_bad_selections_exit_with_a_message(tiny_spec, tmp_path, capsys):
    out = ["--output", str(tmp_path)]
    assert main(["--config", str(tiny_spec), *out, "--task-index", "6"]) == 2
    assert "--task-index 6 is outside 0..5" in capsys.readouterr().err
    assert main(["--config", str(tiny_spec), *out, "--only", "c", "--list-tasks"]) == 2
    assert "no arm 'c'" in capsys.readouterr().err
    assert main([*out]) == 2
    assert "give --config" in capsys.readouterr().err


def _ablate(*args, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vlmkit", "ablate", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.integration
def test_a_real_ablation_in_smoke_mode_end_to_end(tmp_path):
    """Prepare the backbones, run every arm x 2 seeds as real `vlmkit fit` processes, report, rerun, rebuild."""
    out = tmp_path / "out"
    spec = "recipes/ablations/modality_projection.yaml"
    first = _ablate("--config", spec, "--smoke", "--output", str(out), "--jobs", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "preparing the toy pretrained backbones" in first.stdout
    assert json.loads((out / "_pretrained" / "manifest.json").read_text())["lm"]["steps"] == 4
    progress = [line for line in first.stdout.splitlines() if line.startswith("[")]
    assert [line.split(" ")[0] for line in progress] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert sorted(line.split(" ")[1].rstrip(":") for line in progress) == [
        "modality_projection/with/seed0",
        "modality_projection/with/seed1",
        "modality_projection/without/seed0",
        "modality_projection/without/seed1",
    ]
    assert all("finished in" in line and "elapsed" in line for line in progress)
    root = out / "modality_projection"
    for arm in ("without", "with"):
        for seed in (0, 1):
            run = root / arm / f"seed{seed}"
            result = json.loads((run / "result.json").read_text())
            assert result["status"] == "finished" and result["smoke"] is True
            assert result["stages"]["fit"]["global_step"] == 2
            command = (run / "command.txt").read_text()
            assert command.startswith("vlmkit fit --config=recipes/ablations/base/vqa.yaml")
            assert f"--seed_everything={seed}" in command and "--trainer.max_steps=2" in command
            assert (run / "fit.log").stat().st_size > 0
    data = json.loads((root / "results.json").read_text())
    assert [a["runs"]["finished"] for a in data["arms"]] == [2, 2]
    assert data["comparisons"][0]["n"] == 2 and data["comparisons"][0]["verdict"] in (
        "agrees",
        "disagrees",
        "inconclusive",
    )
    assert (root / "results.png").stat().st_size > 0 and "| with MLP projection | 71.4 |" in first.stdout

    again = _ablate("--config", spec, "--smoke", "--output", str(out))
    assert again.returncode == 0
    lines = [line for line in again.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and all("skipped (finished before)" in line for line in lines)
    assert (root / "with" / "seed0" / "fit.log").read_text().count("\n$ ") == 1  # no second launch

    for name in ("results.md", "results.json", "results.png"):
        (root / name).unlink()
    rebuilt = _ablate("--config", spec, "--smoke", "--output", str(out), "--report")
    assert rebuilt.returncode == 0 and json.loads((root / "results.json").read_text()) == data
    assert (root / "results.png").is_file()
