"""Run an ablation: every arm x seed is an ordinary ``vlmkit`` run per stage, in its own process and folder.

Folder of one run: ``<output>/<ablation>/<arm>/seed<k>/`` holding ``command.txt`` (the ``vlmkit`` command of each
stage, runnable from the repository root), ``command.json`` (the exact argv, working directory and environment
overrides), ``<stage>.log`` (stdout and stderr), ``<stage>/`` (the stage's ``default_root_dir``: Lightning logs,
checkpoints, and ``metrics.json`` written by :class:`~vlmkit.ablate.recorder.RunRecorder`) and, written last and
atomically, ``result.json``: the completion marker.

Rerunning skips runs with a ``result.json`` whose commands are those planned now (a run whose command changed is
rerun from scratch). A killed run continues: its finished stages are kept, and an unfinished ``fit`` stage resumes
from the newest ``last.ckpt`` in its folder (Lightning's exact resume: weights, optimizer, scheduler, data position,
the recorder's histories) or, without one, starts over. A stage that exits with an error makes the run *failed*
(``failed.json`` names the log); failed runs are retried on the next sweep and left out of every mean. A run the
divergence guard stopped is *diverged*: finished (not retried), counted, and without a metric.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vlmkit.ablate.spec import PLACEHOLDER, Ablation, Arm, Stage

RESULT = "result.json"
FAILED = "failed.json"
RECORD = "metrics.json"
Status = Literal["finished", "diverged", "failed", "partial", "stale", "pending"]


@dataclass(frozen=True)
class Task:
    """One arm x seed of an ablation, and where it runs."""

    ablation: Ablation
    arm: Arm
    seed: int
    index: int
    run_dir: Path

    @property
    def name(self) -> str:
        """``<ablation>/<arm>/seed<k>``."""
        return f"{self.ablation.name}/{self.arm.name}/seed{self.seed}"


@dataclass
class TaskResult:
    """What happened to a task in this sweep."""

    task: Task
    status: Status
    seconds: float = 0.0
    skipped: bool = False
    log: Path | None = None
    message: str = ""


def plan(ablation: Ablation, output: str | Path, seeds: Sequence[int], only: Sequence[str] | None = None) -> list[Task]:
    """All tasks of ``ablation``, seed-major (every arm at the first seed, then the next seed...).

    Seed-major order means a sweep killed halfway already holds complete paired comparisons for its first seeds.

    Raises:
        KeyError: If ``only`` names an arm the ablation does not have.
    """
    arms = [ablation.arm(name) for name in only] if only else list(ablation.arms)
    root = Path(output).absolute() / ablation.name
    tasks = []
    for seed in seeds:
        for arm in arms:
            tasks.append(Task(ablation, arm, seed, len(tasks), root / arm.name / f"seed{seed}"))
    return tasks


def _expand(arg: str, task: Task, pretrained: Path) -> str:
    def replace(match) -> str:
        kind, target = match.groups()
        if kind == "seed":
            return str(task.seed)
        if kind == "pretrained":
            return str(pretrained)
        if kind == "run":
            return str(task.run_dir)
        if kind == "stage":
            return str(task.run_dir / target)
        record = task.run_dir / target / RECORD  # ckpt
        checkpoint = json.loads(record.read_text()).get("checkpoint") if record.is_file() else None
        if not checkpoint:
            raise RuntimeError(f"{task.name}: stage {target!r} recorded no checkpoint (needed by {match.group(0)})")
        return str(checkpoint)

    return PLACEHOLDER.sub(replace, arg)


def stage_args(task: Task, stage: Stage, pretrained: str | Path, smoke: bool = False) -> list[str]:
    """The ``vlmkit`` arguments of ``stage`` of ``task`` (after the subcommand), placeholders expanded.

    ``{ckpt:NAME}`` needs that stage's record, so call this only once the earlier stages have finished.
    """
    ablation, pretrained = task.ablation, Path(pretrained).absolute()
    raw = [
        *ablation.base,
        *stage.args,
        *task.arm.args,
        *task.arm.stage_args.get(stage.name, ()),
        *ablation.seed_args,
    ]
    stage_dir = task.run_dir / stage.name
    raw += [
        f"--trainer.default_root_dir={stage_dir}",
        "--trainer.callbacks+=vlmkit.ablate.RunRecorder",
        f"--trainer.callbacks.path={stage_dir / RECORD}",
    ]
    if smoke:
        raw += [*ablation.smoke_args.get("*", ()), *ablation.smoke_args.get(stage.name, ())]
    return [_expand(arg, task, pretrained) for arg in raw]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def task_status(task: Task, pretrained: str | Path, smoke: bool = False) -> Status:
    """Where ``task`` stands.

    ``finished``/``diverged`` (a result marker matching today's plan), ``stale`` (a marker of other commands),
    ``failed`` (the last attempt failed), ``partial`` (started, not done) or ``pending``.
    """
    result = _read_json(task.run_dir / RESULT)
    if result is not None:
        if result.get("plan") != _plan_key(task, pretrained, smoke):
            return "stale"
        return result.get("status", "finished")
    if (task.run_dir / FAILED).is_file():
        return "failed"
    return "partial" if task.run_dir.exists() else "pending"


def _plan_key(task: Task, pretrained: str | Path, smoke: bool) -> list[str]:
    """What must match for a finished run to count.

    Each stage's command with ``{seed}`` filled in and the other placeholders left as written (so the folders can
    move), plus the settings of the pretrained backbones it starts from (so rebuilt backbones rerun it).
    """
    key = []
    for stage in task.ablation.stages:
        raw = [*task.ablation.base, *stage.args, *task.arm.args, *task.arm.stage_args.get(stage.name, ())]
        raw += [*task.ablation.seed_args]
        if smoke:
            raw += [*task.ablation.smoke_args.get("*", ()), *task.ablation.smoke_args.get(stage.name, ())]
        key.append(shlex.join([stage.command, *(a.replace("{seed}", str(task.seed)) for a in raw)]))
    if task.ablation.needs_pretrained():
        manifest = _read_json(Path(pretrained) / "manifest.json") or {}
        key.append("pretrained: " + json.dumps(manifest.get("settings"), sort_keys=True))
    return key


def _newest_last_checkpoint(stage_dir: Path) -> Path | None:
    found = [p for p in stage_dir.rglob("last*.ckpt") if p.is_file()] if stage_dir.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(temporary, path)


def run_task(
    task: Task,
    pretrained: str | Path,
    smoke: bool = False,
    env: dict[str, str] | None = None,
    launch: Callable[..., int] | None = None,
    rerun: bool = False,
) -> TaskResult:
    """Run (or continue) every stage of ``task``; write its completion marker or ``failed.json``.

    Args:
        task: The arm x seed.
        pretrained: The toy backbones' folder (``{pretrained}``).
        smoke: Add the ablation's smoke arguments (a few steps).
        env: Environment overrides for the processes (e.g. ``OMP_NUM_THREADS``).
        launch: ``launch(argv, log_file, env) -> returncode``; default: a subprocess (tests replace it).
        rerun: Run it again from scratch even if it finished (e.g. after a code change).

    Returns:
        The outcome (``finished``, ``diverged`` or ``failed``).
    """
    launch = launch or _launch
    status = task_status(task, pretrained, smoke)
    if status in ("finished", "diverged") and not rerun:
        return TaskResult(task, status, skipped=True)
    if status == "stale" or rerun and task.run_dir.exists():
        shutil.rmtree(task.run_dir)
    task.run_dir.mkdir(parents=True, exist_ok=True)
    (task.run_dir / FAILED).unlink(missing_ok=True)
    started = time.perf_counter()
    overrides = dict(env or {})
    commands: list[dict[str, Any]] = []
    stages: dict[str, Any] = {}
    outcome: Status = "finished"
    for stage in task.ablation.stages:
        stage_dir = task.run_dir / stage.name
        record = _read_json(stage_dir / RECORD)
        log = task.run_dir / f"{stage.name}.log"
        if record is None or record.get("status") not in ("finished", "diverged"):
            try:
                args = stage_args(task, stage, pretrained, smoke)
            except RuntimeError as err:  # e.g. an earlier stage recorded no checkpoint for {ckpt:...}
                _write_atomic(task.run_dir / FAILED, {"status": "failed", "stage": stage.name, "message": str(err)})
                return TaskResult(task, "failed", time.perf_counter() - started, message=str(err))
            resume = _newest_last_checkpoint(stage_dir) if stage.command == "fit" else None
            if resume is not None:
                args += [f"--ckpt_path={resume}"]
            else:
                shutil.rmtree(stage_dir, ignore_errors=True)
            argv = [sys.executable, "-m", "vlmkit", stage.command, *args]
            commands.append({"stage": stage.name, "argv": argv, "resumed_from": str(resume) if resume else None})
            _write_commands(task, commands, overrides)
            code = launch(argv, log, overrides)
            record = _read_json(stage_dir / RECORD)
            if _INTERRUPTED.is_set() and (record is None or code != 0):  # stopped by the user: left partial
                return TaskResult(task, "partial", time.perf_counter() - started, log=log, message="interrupted")
            if record is None or code != 0 and record.get("status") != "diverged":
                message = f"stage {stage.name!r} exited with code {code}" + ("" if record else " and wrote no record")
                _write_atomic(
                    task.run_dir / FAILED,
                    {"status": "failed", "stage": stage.name, "returncode": code, "log": str(log), "message": message},
                )
                return TaskResult(task, "failed", time.perf_counter() - started, log=log, message=message)
        else:  # finished in an earlier attempt: keep the command it ran with
            before = {c.get("stage"): c for c in (_read_json(task.run_dir / "command.json") or {}).get("stages", [])}
            commands.append({**before.get(stage.name, {"stage": stage.name, "argv": None}), "finished_before": True})
        stages[stage.name] = {k: record.get(k) for k in ("status", "metrics", "parameters", "seconds", "global_step")}
        if record.get("status") == "diverged":
            outcome = "diverged"
            break
    result = {
        "status": outcome,
        "ablation": task.ablation.name,
        "arm": task.arm.name,
        "seed": task.seed,
        "smoke": smoke,
        "plan": _plan_key(task, pretrained, smoke),
        "stages": stages,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_atomic(task.run_dir / RESULT, result)  # the completion marker, last
    return TaskResult(task, outcome, time.perf_counter() - started)


def _write_commands(task: Task, commands: list[dict[str, Any]], overrides: dict[str, str]) -> None:
    lines = []
    for entry in commands:
        if entry.get("argv"):
            lines.append(shlex.join(["vlmkit", *entry["argv"][3:]]))
    (task.run_dir / "command.txt").write_text("\n".join(lines) + "\n")
    data = {"cwd": os.getcwd(), "env": overrides, "stages": commands}
    (task.run_dir / "command.json").write_text(json.dumps(data, indent=1) + "\n")


_ACTIVE: set[subprocess.Popen] = set()
_ACTIVE_LOCK = threading.Lock()
_INTERRUPTED = threading.Event()


def _launch(argv: list[str], log: Path, overrides: dict[str, str]) -> int:
    env = {**os.environ, **overrides, "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as handle:
        handle.write(f"\n$ {shlex.join(argv)}\n")
        handle.flush()
        with _ACTIVE_LOCK:
            if _INTERRUPTED.is_set():
                return -2
            process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env)
            _ACTIVE.add(process)
        try:
            return process.wait()
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(process)


def _stop_active(timeout: float = 15.0) -> None:
    """Interrupt every running stage process (SIGINT, as Ctrl-C would), then kill what is left after ``timeout``."""
    with _ACTIVE_LOCK:
        processes = list(_ACTIVE)
    for process in processes:
        process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def run_sweep(
    tasks: Sequence[Task],
    pretrained: str | Path,
    smoke: bool = False,
    jobs: int = 1,
    echo: Callable[[str], None] = print,
    launch: Callable[..., int] | None = None,
    rerun: bool = False,
) -> list[TaskResult]:
    """Run ``tasks`` (``jobs`` at a time), printing one progress line per run.

    With ``jobs > 1`` every process gets ``OMP_NUM_THREADS = cpus // jobs`` (unless set), so the runs share the
    cores instead of oversubscribing them.
    """
    env: dict[str, str] = {}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    total = len(tasks)
    started = time.perf_counter()
    lock = threading.Lock()
    results: list[TaskResult] = []
    ran: list[float] = []

    def one(task: Task) -> TaskResult:
        result = run_task(task, pretrained, smoke, env, launch, rerun)
        with lock:
            results.append(result)
            done = len(results)
            elapsed = time.perf_counter() - started
            if result.skipped:
                line = f"skipped ({result.status} before)"
            else:
                ran.append(result.seconds)
                line = f"{result.status} in {_clock(result.seconds)}"
                if result.status == "failed":
                    line += f": {result.message}; log {result.log}"
                else:
                    line += _headline(task)
            remaining = total - done
            eta = f", eta {_clock(sum(ran) / len(ran) * remaining / max(1, jobs))}" if ran and remaining else ""
            echo(f"[{done:>{len(str(total))}}/{total}] {task.name}: {line} | elapsed {_clock(elapsed)}{eta}")
        return result

    _INTERRUPTED.clear()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = [pool.submit(one, task) for task in tasks]
        for future in futures:
            future.result()
    except BaseException:  # Ctrl-C, SIGTERM (see the CLI) or an error: stop the running stages, keep what finished
        _INTERRUPTED.set()
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_active()
        raise
    finally:
        pool.shutdown(wait=True)
        _INTERRUPTED.clear()
    order = {t.index: i for i, t in enumerate(tasks)}
    return sorted(results, key=lambda r: order[r.task.index])


def _headline(task: Task) -> str:
    """`` | <primary metric label> <value>`` read from the run's result."""
    result = _read_json(task.run_dir / RESULT) or {}
    metric = task.ablation.metrics[0]
    stage = metric.stage or task.ablation.stages[-1].name
    value = ((result.get("stages") or {}).get(stage) or {}).get("metrics", {}).get(metric.name)
    return f" | {metric.label} {value:.4g}" if isinstance(value, int | float) else ""
