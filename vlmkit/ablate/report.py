"""Ablation reports rebuilt from the run folders: a printed table, ``results.md``, ``results.json``, ``results.png``.

Only finished runs count: a failed run is listed (with its log) and left out of every mean; a diverged run counts
as a divergence and has no score. Per arm: the paper's number, mean ± std over seeds of every metric (and each
seed's value), parameters (trainable / total) and cost columns. Per comparison: the paper's numbers and direction,
the paired difference over seeds and the verdict (:mod:`vlmkit.ablate.stats`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.ablate.runner import FAILED, RECORD, RESULT
from vlmkit.ablate.spec import Ablation, Arm, Metric
from vlmkit.ablate.stats import Summary, paired, summarize, verdict

# what a diverged run still reports: its cost, size and divergence counts, never a score
_KEPT_WHEN_DIVERGED = ("divergence/", "parameters/", "cost/")
VERDICT_RULE = (
    "Paired differences d_k = arm - reference over the seeds where both finished. Clear difference: n >= 2, "
    "|mean d| > 2 standard errors and every d_k has the sign of the mean. Expected better/worse: agrees if clear "
    "in the paper's direction, disagrees if clear and opposite, else inconclusive (within the seed spread). "
    "Expected similar (tolerance t): agrees if |mean d| + 2 se <= t, disagrees if clear and |mean d| - 2 se > t, "
    "else inconclusive."
)


@dataclass
class ArmResults:
    """The finished, diverged and failed runs of one arm, by seed."""

    arm: Arm
    values: dict[str, dict[int, float]] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    failed_logs: dict[int, str] = field(default_factory=dict)
    parameters: tuple[int, int] | None = None
    histories: dict[int, list[list[float]]] = field(default_factory=dict)

    def summary(self, key: str) -> Summary:
        """Mean ± std over seeds of metric ``key``."""
        return summarize(list(self.values.get(key, {}).values()))

    def count(self, status: str) -> int:
        """Seeds with ``status``."""
        return sum(s == status for s in self.status.values())


def _seed_dirs(arm_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in arm_dir.glob("seed*") if arm_dir.is_dir() else []:
        match = re.fullmatch(r"seed(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def baseline_summary(ablation: Ablation, arms: list[ArmResults]) -> Summary | None:
    """The ablation's baseline level (e.g. the majority answer) over every finished run, or ``None``."""
    if ablation.baseline is None:
        return None
    return summarize([v for a in arms for v in a.values.get(ablation.baseline.key, {}).values()])


def _metric_value(result: dict[str, Any], ablation: Ablation, metric: Metric) -> float:
    stage = metric.stage or ablation.stages[-1].name
    value = ((result.get("stages") or {}).get(stage) or {}).get("metrics", {}).get(metric.name)
    if result.get("status") == "diverged" and not metric.name.startswith(_KEPT_WHEN_DIVERGED):
        return float("nan")
    return float(value) if isinstance(value, int | float) else float("nan")


def collect(ablation: Ablation, output: str | Path) -> list[ArmResults]:
    """Read every run folder of ``ablation`` under ``output`` (any seeds found)."""
    root = Path(output) / ablation.name
    keys = [m.key for m in ablation.metrics] + [k for k in ablation.cost if k not in [m.key for m in ablation.metrics]]
    if ablation.baseline is not None and ablation.baseline.key not in keys:
        keys.append(ablation.baseline.key)
    arms = []
    for arm in ablation.arms:
        results = ArmResults(arm, {key: {} for key in keys})
        for seed, run_dir in _seed_dirs(root / arm.name):
            result = _read(run_dir / RESULT)
            if result is None:
                failed = _read(run_dir / FAILED)
                if failed is not None:
                    results.status[seed] = "failed"
                    results.failed_logs[seed] = str(failed.get("log", run_dir))
                continue
            results.status[seed] = result.get("status", "finished")
            for key in keys:
                results.values[key][seed] = _metric_value(result, ablation, ablation.metric(key))
            first_stage = (result.get("stages") or {}).get(ablation.stages[0].name) or {}
            total = (first_stage.get("parameters") or {}).get("total")
            if results.parameters is None and total:
                results.parameters = (int(total[0]), int(total[1]))
            if ablation.curves:
                history = _history(run_dir, ablation, ablation.curves)
                if history:
                    results.histories[seed] = history
        arms.append(results)
    return arms


def _history(run_dir: Path, ablation: Ablation, name: str) -> list[list[float]]:
    """``[step, value]`` of ``name`` (``train_loss`` or a validation scalar) from the first stage's record."""
    record = _read(run_dir / ablation.stages[0].name / RECORD) or {}
    if name == "train_loss":
        return [list(map(float, point)) for point in record.get("train_loss", [])]
    return [[float(h["step"]), float(h[name])] for h in record.get("history", []) if name in h]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _signed(summary: Summary, digits: int = 3) -> str:
    if summary.n == 0:
        return "–"
    if summary.n == 1:
        return f"{summary.mean:+.{digits}f} (1)"
    return f"{summary.mean:+.{digits}f} ± {summary.std:.{digits}f} ({summary.n})"


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def analyse(ablation: Ablation, arms: list[ArmResults]) -> dict[str, Any]:
    """The ``results.json`` content: per arm summaries, per comparison paired differences and verdicts."""
    by_name = {a.arm.name: a for a in arms}
    data: dict[str, Any] = {
        "ablation": ablation.name,
        "title": ablation.title,
        "paper": ablation.paper,
        "metrics": [{"key": m.key, "label": m.label, "higher_is_better": m.higher_is_better} for m in ablation.metrics],
        "verdict_rule": VERDICT_RULE,
        "baseline": None,
        "arms": [],
        "comparisons": [],
        "failed": [],
    }
    for results in arms:
        entry = {
            "name": results.arm.name,
            "label": results.arm.label,
            "paper": results.arm.paper,
            "runs": {s: results.count(s) for s in ("finished", "diverged", "failed")},
            "parameters": None if results.parameters is None else dict(zip(("total", "trainable"), results.parameters)),
            "metrics": {},
        }
        for key, seeds in results.values.items():
            summary = results.summary(key)
            entry["metrics"][key] = {
                "mean": _json_number(summary.mean),
                "std": _json_number(summary.std),
                "n": summary.n,
                "seeds": {str(k): _json_number(v) for k, v in seeds.items()},
            }
        data["arms"].append(entry)
        for seed, log in results.failed_logs.items():
            data["failed"].append({"arm": results.arm.name, "seed": seed, "log": log})
    baseline = baseline_summary(ablation, arms)
    if baseline is not None:
        data["baseline"] = {
            "key": ablation.baseline.key,
            "label": ablation.baseline.label,
            "mean": _json_number(baseline.mean),
            "std": _json_number(baseline.std),
            "n": baseline.n,
        }
    for comparison in ablation.comparisons:
        metric = ablation.metric(comparison.metric)
        arm, reference = by_name[comparison.arm], by_name[comparison.reference]
        difference = paired(arm.values.get(metric.key, {}), reference.values.get(comparison.reference_key, {}))
        primary = ablation.metrics[0].key
        if comparison.paper is not None:
            paper_arm, paper_ref = comparison.paper
        elif comparison.metric == comparison.reference_key == primary:  # the arms' numbers are the paper's score
            paper_arm, paper_ref = arm.arm.paper, reference.arm.paper
        else:
            paper_arm = paper_ref = None
        data["comparisons"].append(
            {
                "arm": comparison.arm,
                "reference": comparison.reference,
                "metric": metric.key,
                "reference_metric": comparison.reference_key,
                "expect": comparison.expect,
                "tolerance": comparison.tolerance,
                "note": comparison.note,
                "paper_arm": paper_arm,
                "paper_reference": paper_ref,
                "paper_difference": None if paper_arm is None or paper_ref is None else round(paper_arm - paper_ref, 3),
                "differences": {str(k): v for k, v in difference.differences.items()},
                "mean": _json_number(difference.summary.mean),
                "std": _json_number(difference.summary.std),
                "n": difference.summary.n,
                "standard_error": _json_number(difference.standard_error),
                "verdict": verdict(difference, comparison.expect, metric.higher_is_better, comparison.tolerance),
            }
        )
    return data


def markdown(ablation: Ablation, arms: list[ArmResults], data: dict[str, Any]) -> str:
    """``results.md``: the arm table, the comparison table and the failed runs."""
    paper = ablation.paper
    lines = [f"## {ablation.title}", ""]
    if paper.get("reference"):
        lines.append(
            f"Paper: {paper['reference']} ({paper.get('metric', 'score')}). {paper.get('finding', '')}".strip()
        )
        lines.append("")
    metric_keys = [m.key for m in ablation.metrics]
    cost_keys = [k for k in ablation.cost if k not in metric_keys]
    header = ["arm", "paper", ablation.metric(metric_keys[0]).label, "per seed"]
    header += [ablation.metric(k).label for k in metric_keys[1:]]
    header += ["params trainable / total"] + [_cost_label(ablation, k) for k in cost_keys] + ["runs"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for results in arms:
        primary = results.values.get(metric_keys[0], {})
        per_seed = ", ".join(f"{_number(v)}" for _, v in sorted(primary.items())) or "–"
        params = "–" if results.parameters is None else f"{results.parameters[1]:,} / {results.parameters[0]:,}"
        runs = f"{results.count('finished')} ok"
        if results.count("diverged"):
            runs += f", {results.count('diverged')} diverged"
        if results.count("failed"):
            runs += f", {results.count('failed')} failed"
        row = [results.arm.label, _number(results.arm.paper, 1), results.summary(metric_keys[0]).format(), per_seed]
        row += [results.summary(k).format() for k in metric_keys[1:]] + [params]
        row += [_number(results.summary(k).mean) for k in cost_keys] + [runs]
        lines.append("| " + " | ".join(row) + " |")
    if data["baseline"] is not None:
        baseline = data["baseline"]
        lines += ["", f"{ablation.metrics[0].label} of the {baseline['label']}: {_number(baseline['mean'])}."]
    if data["comparisons"]:
        lines += ["", "| comparison | metric | paper | paper's direction | toy difference (per seed) | verdict |"]
        lines.append("|---|---|---|---|---|---|")
        labels = {a.arm.name: a.arm.label for a in arms}
        for c in data["comparisons"]:
            direction = {"better": "better", "worse": "worse", "similar": f"similar (±{c['tolerance']:g})"}[c["expect"]]
            if c["paper_difference"] is None:
                paper_text = "–"
            else:
                paper_text = f"{c['paper_arm']:g} vs {c['paper_reference']:g} ({c['paper_difference']:+g})"
            summary = _difference_summary(c)
            seeds = ", ".join(f"{float(v):+.3f}" for v in c["differences"].values())
            toy = _signed(summary) + (f" [{seeds}]" if seeds else "")
            name = _comparison_name(ablation, labels, c)
            lines.append(
                f"| {name} | {ablation.metric(c['metric']).label} | {paper_text} | {direction} | {toy} | "
                f"**{c['verdict']}** |"
            )
    if data["failed"]:
        lines += ["", "Failed runs (left out of every mean):", ""]
        lines += [f"- {f['arm']} seed {f['seed']}: log `{f['log']}`" for f in data["failed"]]
    lines += ["", f"Verdict rule: {VERDICT_RULE}", ""]
    return "\n".join(lines)


COST_LABELS = {
    "cost/forward_gflops": "forward GFLOPs / sample",
    "cost/visual_tokens": "visual tokens / sample",
    "cost/lm_tokens": "LM tokens / sample",
    "cost/encoder_patches": "encoder patches / sample",
    "cost/images": "images / sample",
}


def _cost_label(ablation: Ablation, key: str) -> str:
    metric = ablation.metric(key)
    return COST_LABELS.get(metric.name, metric.label) if metric.label == key else metric.label


def _difference_summary(comparison: dict[str, Any]) -> Summary:
    mean, std = comparison["mean"], comparison["std"]
    return Summary(float("nan") if mean is None else mean, float("nan") if std is None else std, comparison["n"])


def _comparison_name(ablation: Ablation, labels: dict[str, str], comparison: dict[str, Any]) -> str:
    """``"arm vs reference"``, with each side's metric when they differ."""
    if comparison["metric"] == comparison["reference_metric"]:
        return f"{labels[comparison['arm']]} vs {labels[comparison['reference']]}"
    arm_metric, reference_metric = (ablation.metric(comparison[k]).label for k in ("metric", "reference_metric"))
    return f"{labels[comparison['arm']]} [{arm_metric}] vs {labels[comparison['reference']]} [{reference_metric}]"


def plot(ablation: Ablation, arms: list[ArmResults], path: str | Path) -> None:
    """Write ``results.png``: the plotted metrics per arm (``ablation.plot``), the paper's numbers, per-step curves.

    Bars are means over seeds with ±std and one dot per seed, one bar per plotted metric; curves
    (``ablation.curves``) are per seed.
    """
    from matplotlib.figure import Figure

    shown = [ablation.metric(key) for key in ablation.plot or (ablation.metrics[0].key,)]
    has_paper = any(a.arm.paper is not None for a in arms)
    panels = 1 + has_paper + (ablation.curves is not None)
    figure = Figure(figsize=(5.2 * panels, 4.2), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    labels = [a.arm.label for a in arms]
    positions = list(range(len(arms)))
    ax = axes[0]
    width = 0.8 / len(shown)
    for index, metric in enumerate(shown):  # one bar per metric, grouped per arm
        xs = [x + (index - (len(shown) - 1) / 2) * width for x in positions]
        means = [a.summary(metric.key).mean for a in arms]
        stds = [a.summary(metric.key).std for a in arms]
        face, edge = ("#8fb3d9", "#2f5d8a") if index == 0 else (f"C{index + 1}", "black")
        ax.bar(xs, [0 if math.isnan(m) else m for m in means], width * 0.95, color=face, edgecolor=edge,
               label=metric.label if len(shown) > 1 else None)  # fmt: skip
        errors = [0 if math.isnan(s) else s for s in stds]
        ax.errorbar(xs, means, yerr=errors, fmt="none", ecolor="black", capsize=4)
        for x, results in zip(xs, arms):
            seeds = sorted(results.values.get(metric.key, {}).items())
            values = [v for _, v in seeds if not math.isnan(v)]
            offsets = [x + (i - (len(values) - 1) / 2) * 0.08 * width / 0.8 for i in range(len(values))]
            ax.scatter(offsets, values, color="black", s=14, zorder=3)
    for x, results in zip(positions, arms):
        for bad in ("diverged", "failed"):
            if results.count(bad):
                ax.annotate(f"{results.count(bad)} {bad}", (x, 0), ha="center", va="bottom", fontsize=7, color="red")
    baseline = baseline_summary(ablation, arms)
    if baseline is not None and baseline.n:
        ax.axhline(baseline.mean, color="gray", ls="--", lw=1, label=ablation.baseline.label)
    if len(shown) > 1 or (baseline is not None and baseline.n):
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(shown[0].label if len(shown) == 1 else "score")
    ax.set_title(f"toy scale: {ablation.name}", fontsize=10)
    column = 1
    if has_paper:
        paper_ax = axes[column]
        values = [a.arm.paper if a.arm.paper is not None else 0 for a in arms]
        paper_ax.bar(positions, values, color="#d9b38f", edgecolor="#8a5d2f")
        for x, results in zip(positions, arms):
            if results.arm.paper is None:
                paper_ax.annotate("no number", (x, 0), ha="center", va="bottom", fontsize=7, color="gray")
        paper_ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
        paper_ax.set_ylabel(ablation.paper.get("metric", "paper score"))
        paper_ax.set_title(f"paper: {ablation.paper.get('reference', '')}", fontsize=10)
        column += 1
    if ablation.curves is not None:
        curve_ax = axes[column]
        for index, results in enumerate(arms):
            color = f"C{index % 10}"
            for i, (_, history) in enumerate(sorted(results.histories.items())):
                steps, values = zip(*history) if history else ((), ())
                curve_ax.plot(
                    steps, values, color=color, alpha=0.7, lw=0.8, label=results.arm.label if i == 0 else None
                )
        curve_ax.set_xlabel("step")
        curve_ax.set_ylabel(ablation.curves)
        curve_ax.set_title("per seed", fontsize=10)
        if any(r.histories for r in arms):
            curve_ax.legend(fontsize=7)
    figure.savefig(path, dpi=110)


def build_report(ablation: Ablation, output: str | Path, plot_png: bool = True) -> tuple[str, dict[str, Any]]:
    """Rebuild ``results.md``, ``results.json`` and ``results.png`` of ``ablation`` from its run folders.

    Returns:
        The markdown text and the JSON data.
    """
    root = Path(output) / ablation.name
    root.mkdir(parents=True, exist_ok=True)
    arms = collect(ablation, output)
    data = analyse(ablation, arms)
    text = markdown(ablation, arms, data)
    (root / "results.md").write_text(text)
    (root / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    if plot_png:
        plot(ablation, arms, root / "results.png")
    return text, data


def summary_table(reports: list[tuple[Ablation, dict[str, Any]]]) -> str:
    """One row per comparison of every ablation: the paper's direction beside the toy verdict."""
    lines = ["| ablation | paper | comparison | paper | paper's direction | toy difference | verdict |"]
    lines.append("|---|---|---|---|---|---|---|")
    for ablation, data in reports:
        labels = {a["name"]: a["label"] for a in data["arms"]}
        for c in data["comparisons"]:
            summary = _difference_summary(c)
            paper = "–" if c["paper_difference"] is None else f"{c['paper_difference']:+g}"
            direction = c["expect"] if c["expect"] != "similar" else f"similar (±{c['tolerance']:g})"
            lines.append(
                f"| {ablation.name} | {ablation.paper.get('reference', '')} | {_comparison_name(ablation, labels, c)} "
                f"({ablation.metric(c['metric']).label}) | {paper} | {direction} | {_signed(summary)} | "
                f"**{c['verdict']}** |"
            )
    return "\n".join(lines) + "\n"
