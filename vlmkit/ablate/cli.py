"""``vlmkit ablate``: run the paper's ablations at toy scale and report them beside the paper's numbers.

    vlmkit ablate --config recipes/ablations/fusion.yaml          # 6 arms x 3 seeds, then the report
    vlmkit ablate --all                                            # every ablation in recipes/ablations/
    vlmkit ablate --config ... --smoke                             # every arm for a few steps (2 seeds)
    vlmkit ablate --config ... --report                            # rebuild the report from finished runs
    vlmkit ablate --prepare                                        # only build the toy pretrained backbones
    vlmkit ablate --config ... --list-tasks                        # number the arm x seed tasks (SLURM arrays)
    vlmkit ablate --config ... --task-index $SLURM_ARRAY_TASK_ID   # run one of them

Run it from the repository root (recipes name each other by relative path).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from vlmkit.ablate.spec import Ablation, SpecError, load_ablation

SUITE = Path("recipes/ablations")
DEFAULT_OUTPUT = Path("runs/ablations")
SMOKE_OUTPUT = Path("runs/ablations/_smoke")


def _seeds(text: str) -> list[int]:
    """``"3"`` -> ``[0, 1, 2]``; ``"0,4,7"`` -> ``[0, 4, 7]``."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()] if "," in text else list(range(int(text)))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (3) or a list (0,1,2), got {text!r}") from err
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds must give distinct non-negative seeds, got {text!r}")
    return seeds


def parser() -> argparse.ArgumentParser:
    """The ``vlmkit ablate`` argument parser."""
    p = argparse.ArgumentParser(
        prog="vlmkit ablate",
        description="Run the Idefics2 paper's ablations at toy scale (matched arms x seeds, each an ordinary "
        "`vlmkit fit` in its own process and folder) and report them beside the paper's numbers.",
        epilog="Folders: <output>/<ablation>/<arm>/seed<k>/ (command.txt, <stage>.log, <stage>/metrics.json, "
        "result.json). Run from the repository root.",
    )
    p.add_argument("--config", action="append", default=[], help="an ablation YAML (repeatable)")
    p.add_argument("--all", action="store_true", help=f"every ablation YAML in {SUITE}/")
    p.add_argument(
        "--smoke", action="store_true", help="2 steps per arm, 2 seeds, backbones pretrained for 4 steps (own folder)"
    )
    p.add_argument("--seeds", type=_seeds, default=None, help="a count (3 -> seeds 0,1,2) or a list (0,1,2)")
    p.add_argument("--only", action="append", default=None, help="run only this arm (repeatable, or a,b)")
    p.add_argument("--output", type=Path, default=None, help=f"runs folder (default {DEFAULT_OUTPUT}, smoke "
                   f"{SMOKE_OUTPUT})")  # fmt: skip
    p.add_argument("--pretrained", type=Path, default=None, help="toy backbones folder (default <output>/_pretrained)")
    p.add_argument("--report", action="store_true", help="only rebuild the reports from finished runs")
    p.add_argument("--prepare", action="store_true", help="only build the toy pretrained backbones")
    p.add_argument("--force", action="store_true", help="with --prepare: rebuild the backbones even if present")
    p.add_argument("--rerun", action="store_true", help="run the selected runs again from scratch even if finished")
    p.add_argument("--list-tasks", action="store_true", help="print the numbered arm x seed tasks and their status")
    p.add_argument("--task-index", type=int, default=None, help="run only task I of --list-tasks (SLURM arrays)")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at a time, each with cpus/jobs threads (default: 2 on >= 2 cores: the toy models run faster as "
        "two 1-thread processes than as one 2-thread process)",
    )
    return p


def _ablations(args: argparse.Namespace) -> list[Ablation]:
    paths = [Path(c) for c in args.config]
    if args.all:
        if not SUITE.is_dir():
            raise SpecError(f"--all reads {SUITE}/: run vlmkit ablate from the repository root")
        paths += sorted(SUITE.glob("*.yaml"))
    ablations = [load_ablation(path) for path in paths]
    names = [a.name for a in ablations]
    if len(set(names)) != len(names):
        raise SpecError(f"two ablations share a name: {names}")
    for ablation in ablations:
        _check_config_files(ablation)
    return ablations


def _check_config_files(ablation: Ablation) -> None:
    """Every ``--config`` file an ablation names exists (relative paths are from the working directory)."""
    texts = [*ablation.base, *(a for s in ablation.stages for a in s.args)]
    for arm in ablation.arms:
        texts += [*arm.args, *(a for args in arm.stage_args.values() for a in args)]
    for previous, text in zip(["", *texts], texts):
        name = (
            text.removeprefix("--config=") if text.startswith("--config=") else text if previous == "--config" else ""
        )
        if name and "{" not in name and not Path(name).is_file():
            raise SpecError(
                f"{ablation.path}: config file {name!r} not found from {Path.cwd()} (run vlmkit ablate from the "
                "repository root)"
            )


def _write_reports(ablations: list[Ablation], output: Path) -> None:
    """Rebuild and print every ablation's report; several ablations also get ``summary.md``."""
    from vlmkit.ablate.report import build_report, summary_table

    reports = []
    for ablation in ablations:
        text, data = build_report(ablation, output)
        print(text)
        print(f"written: {output / ablation.name}/results.md, results.json, results.png\n")
        reports.append((ablation, data))
    if len(reports) > 1:
        (output / "summary.md").write_text(summary_table(reports))
        print(f"summary (one row per comparison): {output / 'summary.md'}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vlmkit ablate``; returns the exit code (1 if a run failed)."""
    args = parser().parse_args(argv)
    from vlmkit.ablate import pretrain, runner

    output = args.output or (SMOKE_OUTPUT if args.smoke else DEFAULT_OUTPUT)
    pretrained = args.pretrained or output / "_pretrained"
    settings = pretrain.PretrainSettings.smoke() if args.smoke else pretrain.PretrainSettings()
    try:
        ablations = _ablations(args)
    except SpecError as err:
        print(f"vlmkit ablate: {err}", file=sys.stderr)
        return 2
    if args.prepare:
        print(f"preparing the toy pretrained backbones in {pretrained} ...", flush=True)
        manifest = pretrain.prepare_backbones(pretrained, settings, force=args.force)
        print(pretrain.describe_manifest(manifest))
        if not ablations:
            return 0
    if not ablations:
        print("vlmkit ablate: give --config <ablation.yaml>, --all, or --prepare", file=sys.stderr)
        return 2

    if args.report:
        _write_reports(ablations, output)
        return 0
    jobs = args.jobs if args.jobs is not None else min(2, os.cpu_count() or 1)
    if jobs < 1:
        print(f"vlmkit ablate: --jobs must be >= 1, got {jobs}", file=sys.stderr)
        return 2

    only = [name for entry in args.only for name in entry.split(",") if name] if args.only else None
    tasks = []
    for ablation in ablations:
        seeds = args.seeds or list(range(2 if args.smoke else ablation.seeds))
        try:
            tasks += runner.plan(ablation, output, seeds, only if only else None)
        except KeyError as err:
            print(f"vlmkit ablate: {err.args[0]}", file=sys.stderr)
            return 2
    tasks = [runner.Task(t.ablation, t.arm, t.seed, i, t.run_dir) for i, t in enumerate(tasks)]

    if args.list_tasks:
        try:
            print(f"{len(tasks)} tasks (--task-index 0..{len(tasks) - 1})", flush=True)
            for task in tasks:
                print(f"{task.index:>4}  {task.name:<48} {runner.task_status(task, pretrained, args.smoke)}")
            sys.stdout.flush()
        except BrokenPipeError:  # `--list-tasks | head -1` in a job script
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args.task_index is not None:
        if not 0 <= args.task_index < len(tasks):
            print(f"vlmkit ablate: --task-index {args.task_index} is outside 0..{len(tasks) - 1}", file=sys.stderr)
            return 2
        tasks = [tasks[args.task_index]]

    if any(task.ablation.needs_pretrained() for task in tasks) and not pretrain.is_prepared(pretrained):
        print(f"preparing the toy pretrained backbones in {pretrained} (once) ...", flush=True)
        print(pretrain.describe_manifest(pretrain.prepare_backbones(pretrained, settings)), flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # e.g. a cluster's time limit: stop the stages cleanly
    try:
        results = runner.run_sweep(tasks, pretrained, smoke=args.smoke, jobs=jobs, rerun=args.rerun)
    except KeyboardInterrupt:
        print("vlmkit ablate: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = [r for r in results if r.status == "failed"]
    if args.task_index is None:  # an array task leaves the report to the job that runs --report
        _write_reports(ablations, output)
    for result in failed:
        print(f"FAILED {result.task.name}: {result.message}; log {result.log}", file=sys.stderr)
    return 1 if failed else 0
