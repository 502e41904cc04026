"""An ablation YAML: a base recipe, matched arms, the metric(s) to read and the paper's numbers for the same comparison.

Every arm x seed is an ordinary ``vlmkit fit`` (then ``validate``/``test`` where the metric needs them), one process
per stage, built from arguments a user could type::

    vlmkit <stage.command> <base...> <stage.args...> <arm.args...> <arm.stage_args[stage]...> <seed_args...>

Arguments may hold placeholders, expanded per run: ``{seed}``, ``{pretrained}`` (the toy backbones' folder),
``{run}`` (the run's folder), ``{stage:NAME}`` (a stage's folder) and ``{ckpt:NAME}`` (the last checkpoint an
earlier stage wrote). See ``recipes/ablations/`` for examples and the README section "The paper at toy scale".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

Expect = Literal["better", "worse", "similar"]
"""The paper's direction of effect for ``arm`` against ``reference``: better or worse on the metric (whatever
its sign convention), or no meaningful difference (within the comparison's ``tolerance``)."""
Command = Literal["fit", "validate", "test"]

PLACEHOLDER = re.compile(r"\{([a-z_]+)(?::([A-Za-z0-9_\-]+))?\}")
SIMPLE_PLACEHOLDERS = ("seed", "pretrained", "run")
STAGE_PLACEHOLDERS = ("stage", "ckpt")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


class SpecError(ValueError):
    """An ablation YAML is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Stage:
    """One process of a run: ``vlmkit <command>`` with extra arguments (after the base, before the arm's)."""

    name: str
    command: Command = "fit"
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Metric:
    """A number read from a stage's record (``RunRecorder``).

    Attributes:
        key: ``"<stage>:<name>"`` (``name`` alone: the last stage), e.g. ``"fit:val/accuracy"``,
            ``"eval:val/reading_anls"``, ``"fit:divergence/events"``, ``"fit:cost/forward_gflops"``.
        label: Column title.
        higher_is_better: Direction of "better" for the verdicts.
    """

    key: str
    label: str
    higher_is_better: bool = True

    @property
    def stage(self) -> str | None:
        """The stage part of ``key`` (``None``: the last stage)."""
        return self.key.split(":", 1)[0] if ":" in self.key else None

    @property
    def name(self) -> str:
        """The metric name inside the stage's record."""
        return self.key.split(":", 1)[-1]


@dataclass(frozen=True)
class Arm:
    """One configuration of the ablation: what differs from the base, and the paper's number for it."""

    name: str
    label: str
    args: tuple[str, ...] = ()
    stage_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    paper: float | None = None


@dataclass(frozen=True)
class Comparison:
    """``arm`` (its ``metric``) against ``reference`` (its ``reference_metric``), paired by seed.

    With the paper's direction of effect. Two metrics of one arm compare e.g. the same weights evaluated two ways
    (image splitting at inference, paper Table 9). ``paper`` gives the paper's ``(arm, reference)`` numbers when they
    are not the arms' own (another table of the paper).
    """

    arm: str
    reference: str
    expect: Expect
    metric: str
    tolerance: float = 0.0
    note: str = ""
    reference_metric: str = ""
    paper: tuple[float, float] | None = None

    @property
    def reference_key(self) -> str:
        """The reference's metric key."""
        return self.reference_metric or self.metric


@dataclass(frozen=True)
class Ablation:
    """A parsed ablation YAML (see the module docstring).

    Attributes:
        name: Folder name under the output directory (default: the file's stem).
        title: One line saying what is compared.
        path: The YAML file.
        paper: ``reference`` (table/finding), ``metric`` (the paper's score) and ``finding`` (what it says). The
            arms' ``paper`` numbers are that score: comparisons on the primary metric show them, comparisons on
            other metrics only their own ``paper`` pair.
        base: Arguments of every stage of every arm, first.
        stages: The processes of one run, in order.
        arms: The compared configurations (the first is the default reference).
        metrics: What to read; the first is the primary metric (plots, default comparisons).
        comparisons: The pairs to judge, with the paper's direction.
        seeds: Seeds per arm by default.
        seed_args: Arguments that set the seed (``{seed}``), e.g. ``--seed_everything={seed}``.
        smoke_args: Extra arguments of ``--smoke`` runs (a few steps), last: ``"*"`` for every stage, else per
            stage name (YAML: ``smoke: {args: [...], stage_args: {NAME: [...]}}``).
        budget_minutes: The intended time of the whole ablation on an idle 2-core CPU at its defaults.
        cost: Metric keys shown as cost columns (e.g. ``fit:cost/forward_gflops``).
        curves: Metric name whose per-step history is plotted beside the bars (``train_loss`` or a logged
            validation metric), or ``None``.
        plot: Metric keys drawn as bars, grouped per arm (default: the primary metric), e.g. the same weights scored
            without and with image splitting.
        baseline: A reference level of the primary metric read from the runs (e.g. the majority-answer accuracy,
            ``fit:val/majority_baseline``), drawn as a line and printed under the table.
    """

    name: str
    title: str
    path: Path
    paper: dict[str, str]
    base: tuple[str, ...]
    stages: tuple[Stage, ...]
    arms: tuple[Arm, ...]
    metrics: tuple[Metric, ...]
    comparisons: tuple[Comparison, ...]
    seeds: int = 3
    seed_args: tuple[str, ...] = ("--seed_everything={seed}",)
    smoke_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    budget_minutes: float = 15.0
    cost: tuple[str, ...] = ()
    curves: str | None = None
    plot: tuple[str, ...] = ()
    baseline: Metric | None = None

    def arm(self, name: str) -> Arm:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"{self.path}: no arm {name!r}; arms are {[a.name for a in self.arms]}")

    def metric(self, key: str) -> Metric:
        """The metric with ``key`` (or a plain one made from it)."""
        for metric in self.metrics:
            if metric.key == key:
                return metric
        return Metric(key, key)

    def needs_pretrained(self) -> bool:
        """Whether any argument names ``{pretrained}``."""
        texts = [*self.base, *self.seed_args, *(a for s in self.stages for a in s.args)]
        for arm in self.arms:
            texts += [*arm.args, *(a for args in arm.stage_args.values() for a in args)]
        return any("{pretrained}" in text for text in texts)


def _fail(path: Path, where: str, message: str) -> SpecError:
    return SpecError(f"{path}: {where}: {message}")


def _strings(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
        raise _fail(path, where, f"expected a list of command-line arguments (strings), got {value!r}")
    return tuple(str(v) for v in value)


def _check_keys(path: Path, where: str, mapping: Any, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(mapping, dict):
        raise _fail(path, where, f"expected a mapping, got {type(mapping).__name__}")
    unknown = set(mapping) - allowed
    if unknown:
        raise _fail(path, where, f"unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    missing = required - set(mapping)
    if missing:
        raise _fail(path, where, f"missing key(s) {sorted(missing)}")
    return mapping


def _check_placeholders(path: Path, where: str, args: tuple[str, ...], stages: list[str], before: int) -> None:
    """Placeholders are known, and ``{stage:X}``/``{ckpt:X}`` name an earlier stage (``stages[:before]``)."""
    for arg in args:
        for match in PLACEHOLDER.finditer(arg):
            kind, target = match.groups()
            if target is None and kind in SIMPLE_PLACEHOLDERS:
                continue
            if target is not None and kind in STAGE_PLACEHOLDERS:
                if target not in stages[:before]:
                    raise _fail(path, where, f"{match.group(0)} must name an earlier stage, one of {stages[:before]}")
                continue
            raise _fail(
                path,
                where,
                f"unknown placeholder {match.group(0)}; use {{seed}}, {{pretrained}}, {{run}}, {{stage:NAME}} "
                "or {ckpt:NAME}",
            )


def load_ablation(path: str | Path) -> Ablation:
    """Parse and check an ablation YAML.

    Raises:
        SpecError: Naming the file and the key, for anything malformed (unknown keys, unknown arms in a
            comparison, bad placeholders, duplicate names...).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f"{path}: cannot read the ablation YAML ({err})") from err
    top = {
        "name", "title", "paper", "base", "stages", "arms", "metrics", "comparisons", "seeds", "seed_args",
        "smoke", "budget_minutes", "cost", "curves", "tolerance", "baseline", "plot",
    }  # fmt: skip
    raw = _check_keys(path, "top level", raw, top, {"title", "arms", "metrics"})
    name = str(raw.get("name", path.stem))
    if not NAME.match(name):
        raise _fail(path, "name", f"{name!r} must be a folder name (letters, digits, _ and -)")
    paper = _check_keys(path, "paper", raw.get("paper", {}), {"reference", "metric", "finding"})

    stage_list = raw.get("stages") or [{"name": "fit", "command": "fit"}]
    stages: list[Stage] = []
    for i, entry in enumerate(stage_list):
        entry = _check_keys(path, f"stages[{i}]", entry, {"name", "command", "args"}, {"name"})
        command = entry.get("command", "fit")
        if command not in get_args(Command):
            raise _fail(path, f"stages[{i}].command", f"{command!r} is not one of {get_args(Command)}")
        if not NAME.match(str(entry["name"])):
            raise _fail(path, f"stages[{i}].name", f"{entry['name']!r} must be a folder name")
        stages.append(Stage(str(entry["name"]), command, _strings(path, f"stages[{i}].args", entry.get("args"))))
    stage_names = [s.name for s in stages]
    if len(set(stage_names)) != len(stage_names):
        raise _fail(path, "stages", f"stage names must be unique, got {stage_names}")

    base = _strings(path, "base", raw.get("base"))
    seed_args = _strings(path, "seed_args", raw.get("seed_args", ["--seed_everything={seed}"]))
    _check_placeholders(path, "base", base, stage_names, 0)
    _check_placeholders(path, "seed_args", seed_args, stage_names, 0)
    for i, stage in enumerate(stages):
        _check_placeholders(path, f"stages[{i}].args", stage.args, stage_names, i)

    if not isinstance(raw["arms"], list) or not raw["arms"]:
        raise _fail(path, "arms", "expected a non-empty list of arms")
    arms: list[Arm] = []
    for i, entry in enumerate(raw["arms"]):
        entry = _check_keys(path, f"arms[{i}]", entry, {"name", "label", "args", "stage_args", "paper"}, {"name"})
        arm_name = str(entry["name"])
        if not NAME.match(arm_name):
            raise _fail(path, f"arms[{i}].name", f"{arm_name!r} must be a folder name (letters, digits, _ and -)")
        args = _strings(path, f"arms[{i}].args", entry.get("args"))
        _check_placeholders(path, f"arms[{i}].args", args, stage_names, 0)
        stage_args = {}
        for stage_name, values in _check_keys(
            path, f"arms[{i}].stage_args", entry.get("stage_args") or {}, set(stage_names)
        ).items():
            stage_args[stage_name] = _strings(path, f"arms[{i}].stage_args.{stage_name}", values)
            before = stage_names.index(stage_name)
            _check_placeholders(path, f"arms[{i}].stage_args.{stage_name}", stage_args[stage_name], stage_names, before)
        paper_value = entry.get("paper")
        if paper_value is not None and not isinstance(paper_value, int | float):
            raise _fail(path, f"arms[{i}].paper", f"expected a number or null, got {paper_value!r}")
        arms.append(Arm(arm_name, str(entry.get("label", arm_name)), args, stage_args, paper_value))
    arm_names = [a.name for a in arms]
    if len(set(arm_names)) != len(arm_names):
        raise _fail(path, "arms", f"arm names must be unique, got {arm_names}")

    if not isinstance(raw["metrics"], list) or not raw["metrics"]:
        raise _fail(path, "metrics", "expected a non-empty list of metrics")
    metrics = []
    for i, entry in enumerate(raw["metrics"]):
        entry = _check_keys(path, f"metrics[{i}]", entry, {"key", "label", "higher_is_better"}, {"key"})
        metric = Metric(
            str(entry["key"]), str(entry.get("label", entry["key"])), bool(entry.get("higher_is_better", True))
        )
        if metric.stage is not None and metric.stage not in stage_names:
            raise _fail(path, f"metrics[{i}].key", f"stage {metric.stage!r} is not one of {stage_names}")
        metrics.append(metric)

    default_tolerance = float(raw.get("tolerance", 0.0))
    comparisons = []
    for i, entry in enumerate(raw.get("comparisons") or []):
        entry = _check_keys(
            path, f"comparisons[{i}]", entry,
            {"arm", "reference", "expect", "metric", "reference_metric", "tolerance", "note", "paper"},
            {"arm", "reference", "expect"},
        )  # fmt: skip
        for key in ("arm", "reference"):
            if entry[key] not in arm_names:
                raise _fail(path, f"comparisons[{i}].{key}", f"{entry[key]!r} is not an arm ({arm_names})")
        if entry["expect"] not in get_args(Expect):
            raise _fail(path, f"comparisons[{i}].expect", f"{entry['expect']!r} is not one of {get_args(Expect)}")
        metric_key = str(entry.get("metric", metrics[0].key))
        reference_key = str(entry.get("reference_metric", metric_key))
        for key, value in (("metric", metric_key), ("reference_metric", reference_key)):
            if value not in [m.key for m in metrics]:
                raise _fail(path, f"comparisons[{i}].{key}", f"{value!r} is not a listed metric key")
        if (entry["arm"], metric_key) == (entry["reference"], reference_key):
            raise _fail(path, f"comparisons[{i}]", "compares an arm's metric with itself")
        tolerance = float(entry.get("tolerance", default_tolerance))
        paper_pair = entry.get("paper")
        if paper_pair is not None and (
            not isinstance(paper_pair, list)
            or len(paper_pair) != 2
            or not all(isinstance(v, int | float) for v in paper_pair)
        ):
            raise _fail(path, f"comparisons[{i}].paper", f"expected [arm number, reference number], got {paper_pair!r}")
        if entry["expect"] == "similar" and tolerance <= 0:
            raise _fail(path, f"comparisons[{i}].tolerance", "expect: similar needs a tolerance > 0 (metric units)")
        comparisons.append(
            Comparison(
                entry["arm"],
                entry["reference"],
                entry["expect"],
                metric_key,
                tolerance,
                str(entry.get("note", "")),
                "" if reference_key == metric_key else reference_key,
                None if paper_pair is None else (float(paper_pair[0]), float(paper_pair[1])),
            )
        )

    smoke = _check_keys(path, "smoke", raw.get("smoke") or {}, {"args", "stage_args"})
    smoke_args = {"*": _strings(path, "smoke.args", smoke.get("args"))}
    for stage_name, values in _check_keys(
        path, "smoke.stage_args", smoke.get("stage_args") or {}, set(stage_names)
    ).items():
        smoke_args[stage_name] = _strings(path, f"smoke.stage_args.{stage_name}", values)
    seeds = raw.get("seeds", 3)
    if not isinstance(seeds, int) or seeds < 1:
        raise _fail(path, "seeds", f"expected a positive integer, got {seeds!r}")
    curves = raw.get("curves")
    plot = _strings(path, "plot", raw.get("plot"))
    known = [metric.key for metric in metrics]
    for key in plot:
        if key not in known:
            raise _fail(path, "plot", f"{key!r} is not one of the metrics {known}")
    baseline = None
    if raw.get("baseline") is not None:
        entry = _check_keys(path, "baseline", raw["baseline"], {"key", "label"}, {"key"})
        baseline = Metric(str(entry["key"]), str(entry.get("label", "baseline")))
        if baseline.stage is not None and baseline.stage not in stage_names:
            raise _fail(path, "baseline.key", f"stage {baseline.stage!r} is not one of {stage_names}")
    return Ablation(
        name=name,
        title=str(raw["title"]),
        path=path,
        paper={k: str(v) for k, v in paper.items()},
        base=base,
        stages=tuple(stages),
        arms=tuple(arms),
        metrics=tuple(metrics),
        comparisons=tuple(comparisons),
        seeds=seeds,
        seed_args=seed_args,
        smoke_args=smoke_args,
        budget_minutes=float(raw.get("budget_minutes", 15.0)),
        cost=_strings(path, "cost", raw.get("cost")),
        curves=None if curves is None else str(curves),
        plot=plot or (metrics[0].key,),
        baseline=baseline,
    )
