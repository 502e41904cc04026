import json

from vlmkit.ablate.runner import plan, run_sweep, run_task, stage_args, task_status
from vlmkit.ablate.spec import load_ablation


def _tasks(spec, tmp_path, seeds=(0, 1)):
    return plan(load_ablation(spec), tmp_path / "out", list(seeds))


def test_tasks_are_seed_major_with_one_folder_per_arm_and_seed(tiny_spec, tmp_path):
    tasks = _tasks(tiny_spec, tmp_path)
    assert [(t.arm.name, t.seed) for t in tasks] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert tasks[3].run_dir == (tmp_path / "out" / "tiny" / "b" / "seed1").absolute()
    assert [t.index for t in tasks] == [0, 1, 2, 3]


def test_stage_arguments_are_base_stage_arm_seed_then_run_folder_and_recorder(tiny_spec, tmp_path):
    task = _tasks(tiny_spec, tmp_path)[1]
    args = stage_args(task, task.ablation.stages[0], tmp_path / "pre")
    assert args[:4] == [
        "--config=recipes/quickstart.yaml",
        f"--model.vlm.init_args.language_model.init_args.tokenizer={(tmp_path / 'pre').absolute()}/lm",
        "--trainer.max_steps=3",
        "--seed_everything=0",
    ]
    assert args[4:] == [
        f"--trainer.default_root_dir={task.run_dir / 'fit'}",
        "--trainer.callbacks+=vlmkit.ablate.RunRecorder",
        f"--trainer.callbacks.path={task.run_dir / 'fit' / 'metrics.json'}",
    ]
    smoke = stage_args(task, task.ablation.stages[0], tmp_path / "pre", smoke=True)
    assert smoke[-1] == "--trainer.max_steps=1"  # smoke arguments come last


def test_a_sweep_runs_every_stage_and_writes_command_log_record_and_marker(tiny_spec, tmp_path, fake_vlmkit):
    tasks = _tasks(tiny_spec, tmp_path)
    lines = []
    results = run_sweep(tasks, tmp_path / "pre", echo=lines.append, launch=fake_vlmkit)
    assert [r.status for r in results] == ["finished"] * 4
    assert len(fake_vlmkit.calls) == 8  # fit + validate per run
    run = tasks[0].run_dir
    # validate got the checkpoint the fit stage recorded
    validate = fake_vlmkit.calls[1]
    assert validate[3] == "validate"
    assert f"--ckpt_path={run / 'fit' / 'lightning_logs' / 'version_0' / 'checkpoints' / 'last.ckpt'}" in validate
    commands = (run / "command.txt").read_text().splitlines()
    assert [c.split()[:2] for c in commands] == [["vlmkit", "fit"], ["vlmkit", "validate"]]
    assert (run / "fit.log").is_file() and (run / "eval.log").is_file()
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "finished" and result["stages"]["eval"]["metrics"]["val/accuracy"] == 0.5
    assert lines[0].startswith("[1/4] tiny/a/seed0: finished in") and "accuracy 0.5" in lines[0]
    assert "elapsed" in lines[-1]


def test_a_rerun_skips_finished_runs_without_launching_anything(tiny_spec, tmp_path, fake_vlmkit):
    tasks = _tasks(tiny_spec, tmp_path)
    run_sweep(tasks, tmp_path / "pre", echo=lambda _: None, launch=fake_vlmkit)
    fake_vlmkit.calls.clear()
    lines = []
    results = run_sweep(tasks, tmp_path / "pre", echo=lines.append, launch=fake_vlmkit)
    assert fake_vlmkit.calls == []
    assert all(r.skipped for r in results)
    assert all("skipped (finished before)" in line for line in lines)


def test_a_killed_run_resumes_its_fit_from_last_ckpt(tiny_spec, tmp_path, fake_vlmkit):
    task = _tasks(tiny_spec, tmp_path)[0]
    fake_vlmkit.kill.add("2")
    first = run_task(task, tmp_path / "pre", launch=fake_vlmkit)
    assert first.status == "failed" and task_status(task, tmp_path / "pre") == "failed"
    assert not (task.run_dir / "result.json").exists()
    fake_vlmkit.calls.clear()
    second = run_task(task, tmp_path / "pre", launch=fake_vlmkit)
    assert second.status == "finished"
    resumed = fake_vlmkit.calls[0]
    last = task.run_dir / "fit" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert resumed[-1] == f"--ckpt_path={last}"
    assert not (task.run_dir / "failed.json").exists()


def test_a_finished_stage_is_not_rerun_when_a_later_stage_was_interrupted(tiny_spec, tmp_path, fake_vlmkit):
    task = _tasks(tiny_spec, tmp_path)[0]
    run_task(task, tmp_path / "pre", launch=fake_vlmkit)
    (task.run_dir / "result.json").unlink()
    (task.run_dir / "eval" / "metrics.json").unlink()  # killed during validate
    fake_vlmkit.calls.clear()
    assert run_task(task, tmp_path / "pre", launch=fake_vlmkit).status == "finished"
    assert [call[3] for call in fake_vlmkit.calls] == ["validate"]
    commands = (task.run_dir / "command.txt").read_text().splitlines()
    assert [c.split()[1] for c in commands] == ["fit", "validate"]  # the finished stage's command is kept


def test_a_failed_arm_is_reported_with_its_log_and_retried_next_time(tiny_spec, tmp_path, fake_vlmkit):
    tasks = _tasks(tiny_spec, tmp_path)
    fake_vlmkit.fail.add("3")  # arm b's fit fails
    lines = []
    results = run_sweep(tasks, tmp_path / "pre", echo=lines.append, launch=fake_vlmkit)
    assert [r.status for r in results] == ["finished", "failed", "finished", "failed"]
    failed = json.loads((tasks[1].run_dir / "failed.json").read_text())
    assert failed["stage"] == "fit" and failed["returncode"] == 1 and failed["log"].endswith("fit.log")
    assert "exited with code 1" in lines[1] and "fit.log" in lines[1]
    fake_vlmkit.fail.clear()
    fake_vlmkit.calls.clear()
    run_sweep(tasks, tmp_path / "pre", echo=lambda _: None, launch=fake_vlmkit)
    assert len(fake_vlmkit.calls) == 4  # only arm b's two runs, both stages


def test_a_diverged_run_is_finished_and_skips_its_later_stages(tiny_spec, tmp_path, fake_vlmkit):
    task = _tasks(tiny_spec, tmp_path)[0]
    fake_vlmkit.diverge.add("2")
    result = run_task(task, tmp_path / "pre", launch=fake_vlmkit)
    assert result.status == "diverged"
    assert [call[3] for call in fake_vlmkit.calls] == ["fit"]
    assert task_status(task, tmp_path / "pre") == "diverged"


def test_a_run_whose_command_changed_is_stale_and_rerun(tiny_spec, tmp_path, fake_vlmkit):
    task = _tasks(tiny_spec, tmp_path)[0]
    run_task(task, tmp_path / "pre", launch=fake_vlmkit)
    tiny_spec.write_text(tiny_spec.read_text().replace("--trainer.max_steps=2", "--trainer.max_steps=4"))
    changed = _tasks(tiny_spec, tmp_path)[0]
    assert task_status(changed, tmp_path / "pre") == "stale"
    fake_vlmkit.calls.clear()
    assert run_task(changed, tmp_path / "pre", launch=fake_vlmkit).status == "finished"
    assert len(fake_vlmkit.calls) == 2


def test_an_interrupted_sweep_stops_its_stages_and_leaves_runs_partial_not_failed(tiny_spec, tmp_path, fake_vlmkit):
    import os
    import signal
    import time

    import pytest

    tasks = _tasks(tiny_spec, tmp_path)

    def launch(argv, log, env):
        if len(fake_vlmkit.calls) == 2:  # Ctrl-C during the second run: the signal reaches the main thread
            fake_vlmkit.calls.append(argv)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
            return -2  # the stage process dies of the SIGINT
        return fake_vlmkit(argv, log, env)

    # A process started in the background by a non-interactive shell inherits SIGINT ignored; Ctrl-C is Python's
    # default handler in a terminal, so install it for the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(tasks, tmp_path / "pre", echo=lambda _: None, launch=launch)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert task_status(tasks[0], tmp_path / "pre") == "finished"
    assert task_status(tasks[1], tmp_path / "pre") == "partial"
    assert task_status(tasks[2], tmp_path / "pre") == "pending"  # never started


def test_stop_active_interrupts_running_stage_processes(tmp_path):
    import sys
    import threading
    import time

    from vlmkit.ablate import runner

    codes = []
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    thread = threading.Thread(target=lambda: codes.append(runner._launch(argv, tmp_path / "log.txt", {})))
    thread.start()
    deadline = time.monotonic() + 30
    while not runner._ACTIVE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner._ACTIVE, "the stage process did not start"
    started = time.monotonic()
    runner._stop_active(timeout=5)
    thread.join(10)
    assert codes and codes[0] != 0 and time.monotonic() - started < 8
    assert not runner._ACTIVE and "$ " in (tmp_path / "log.txt").read_text()


def test_a_missing_checkpoint_of_an_earlier_stage_fails_the_run_with_a_message(tiny_spec, tmp_path, fake_vlmkit):
    task = _tasks(tiny_spec, tmp_path)[0]

    def launch(argv, log, env):
        code = fake_vlmkit(argv, log, env)
        record = task.run_dir / "fit" / "metrics.json"
        record.write_text(json.dumps({**json.loads(record.read_text()), "checkpoint": None}))
        return code

    result = run_task(task, tmp_path / "pre", launch=launch)
    assert result.status == "failed" and "stage 'fit' recorded no checkpoint" in result.message
    assert json.loads((task.run_dir / "failed.json").read_text())["stage"] == "eval"


def test_rebuilt_backbones_make_finished_runs_stale_but_moving_folders_does_not(tiny_spec, tmp_path, fake_vlmkit):
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "manifest.json").write_text(json.dumps({"settings": {"lm_steps": 1000}}))
    task = _tasks(tiny_spec, tmp_path)[0]
    run_task(task, pre, launch=fake_vlmkit)
    assert task_status(task, pre) == "finished"
    moved = tmp_path / "moved"
    pre.rename(moved)
    assert task_status(task, moved) == "finished"  # same backbones, another folder
    (moved / "manifest.json").write_text(json.dumps({"settings": {"lm_steps": 4000}}))
    assert task_status(task, moved) == "stale"


def test_rerun_runs_finished_runs_again_from_scratch(tiny_spec, tmp_path, fake_vlmkit):
    task = _tasks(tiny_spec, tmp_path)[0]
    run_task(task, tmp_path / "pre", launch=fake_vlmkit)
    (task.run_dir / "leftover.txt").write_text("old")
    fake_vlmkit.calls.clear()
    assert run_task(task, tmp_path / "pre", launch=fake_vlmkit, rerun=True).status == "finished"
    assert len(fake_vlmkit.calls) == 2 and not (task.run_dir / "leftover.txt").exists()
