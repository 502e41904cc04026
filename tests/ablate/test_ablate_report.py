import json
import math

import pytest

from vlmkit.ablate.report import build_report, summary_table
from vlmkit.ablate.runner import plan, run_sweep
from vlmkit.ablate.spec import load_ablation


def _sweep(spec, tmp_path, fake, seeds=(0, 1, 2)):
    ablation = load_ablation(spec)
    run_sweep(plan(ablation, tmp_path / "out", list(seeds)), tmp_path / "pre", echo=lambda _: None, launch=fake)
    return ablation


def test_report_has_means_paired_differences_and_a_verdict_beside_the_paper(tiny_spec, tmp_path, fake_vlmkit):
    ablation = _sweep(tiny_spec, tmp_path, fake_vlmkit)
    text, data = build_report(ablation, tmp_path / "out")
    root = tmp_path / "out" / "tiny"
    assert json.loads((root / "results.json").read_text()) == data
    assert (root / "results.md").read_text() == text
    assert (root / "results.png").read_bytes()[:4] == b"\x89PNG"
    a, b = data["arms"]
    # the fake scores 0.5 + 0.01 * seed for arm a and 0.6 + 0.01 * seed for arm b
    assert a["metrics"]["eval:val/accuracy"]["mean"] == pytest.approx(0.51)
    assert a["metrics"]["eval:val/accuracy"]["std"] == pytest.approx(0.01)
    assert b["metrics"]["eval:val/accuracy"]["seeds"] == pytest.approx({"0": 0.6, "1": 0.61, "2": 0.62})
    assert a["parameters"] == {"total": 100, "trainable": 10}
    comparison = data["comparisons"][0]
    assert comparison["paper_difference"] == pytest.approx(5.0)
    assert comparison["mean"] == pytest.approx(0.1) and comparison["n"] == 3
    assert comparison["verdict"] == "agrees"
    assert "| Arm A | 50.0 | 0.510 ± 0.010 (3) |" in text
    assert "| Arm B vs Arm A | accuracy | 55 vs 50 (+5) | better | +0.100 ± 0.000 (3)" in text
    assert "**agrees**" in text and "Verdict rule" in text
    assert data["comparisons"][0]["paper_difference"] == pytest.approx(5.0)
    assert data["baseline"]["mean"] == pytest.approx(0.4) and "accuracy of the majority answer: 0.400." in text


def test_a_failed_arm_is_listed_and_left_out_of_every_mean(tiny_spec, tmp_path, fake_vlmkit):
    ablation = load_ablation(tiny_spec)
    tasks = plan(ablation, tmp_path / "out", [0, 1, 2])
    fake_vlmkit.fail.add("3")
    run_sweep(tasks[:3], tmp_path / "pre", echo=lambda _: None, launch=fake_vlmkit)  # arm b seed 0 fails
    fake_vlmkit.fail.clear()
    run_sweep(tasks[3:], tmp_path / "pre", echo=lambda _: None, launch=fake_vlmkit)
    text, data = build_report(ablation, tmp_path / "out")
    b = data["arms"][1]
    assert b["runs"] == {"finished": 2, "diverged": 0, "failed": 1}
    assert b["metrics"]["eval:val/accuracy"]["n"] == 2
    assert b["metrics"]["eval:val/accuracy"]["mean"] == pytest.approx(0.615)
    assert data["failed"] == [{"arm": "b", "seed": 0, "log": str(tasks[1].run_dir / "fit.log")}]
    assert data["comparisons"][0]["n"] == 2  # paired over the seeds both arms finished
    assert "2 ok, 1 failed" in text and "fit.log" in text


def test_a_diverged_run_counts_as_a_divergence_and_has_no_score(tiny_spec, tmp_path, fake_vlmkit):
    fake_vlmkit.diverge.add("2")  # arm a diverges at every seed
    ablation = _sweep(tiny_spec, tmp_path, fake_vlmkit)
    _, data = build_report(ablation, tmp_path / "out")
    a = data["arms"][0]
    assert a["runs"]["diverged"] == 3
    assert a["metrics"]["eval:val/accuracy"]["n"] == 0
    assert a["metrics"]["fit:divergence/events"]["mean"] == 1.0
    assert data["comparisons"][0]["verdict"] == "inconclusive"  # no paired seed


def test_report_rebuilds_from_the_folders_alone(tiny_spec, tmp_path, fake_vlmkit):
    ablation = _sweep(tiny_spec, tmp_path, fake_vlmkit)
    first, _ = build_report(ablation, tmp_path / "out")
    for name in ("results.md", "results.json", "results.png"):
        (tmp_path / "out" / "tiny" / name).unlink()
    again, data = build_report(load_ablation(tiny_spec), tmp_path / "out")
    assert again == first
    table = summary_table([(ablation, data)])
    assert "| tiny | Table 0 | Arm B vs Arm A (accuracy) | +5 | better | +0.100" in table


def test_report_of_an_ablation_that_never_ran_is_empty_not_an_error(tiny_spec, tmp_path):
    text, data = build_report(load_ablation(tiny_spec), tmp_path / "out")
    assert all(a["metrics"]["eval:val/accuracy"]["n"] == 0 for a in data["arms"])
    assert math.isnan(float("nan")) and "| Arm A | 50.0 | – |" in text


def test_the_arms_paper_numbers_only_stand_beside_the_primary_metric(tiny_spec, tmp_path, fake_vlmkit):
    tiny_spec.write_text(
        tiny_spec.read_text().replace(
            "  - {arm: b, reference: a, expect: better}",
            "  - {arm: b, reference: a, expect: better}\n"
            '  - {arm: b, reference: a, expect: better, metric: "fit:divergence/events"}\n'
            '  - {arm: b, reference: a, expect: better, metric: "fit:divergence/events", paper: [1, 2]}',
        )
    )
    ablation = _sweep(tiny_spec, tmp_path, fake_vlmkit, seeds=(0, 1))
    _, data = build_report(ablation, tmp_path / "out")
    assert [c["paper_difference"] for c in data["comparisons"]] == [5.0, None, -1.0]


def test_the_plot_groups_one_bar_per_plotted_metric_per_arm(tiny_spec, tmp_path, fake_vlmkit, monkeypatch):
    from matplotlib.figure import Figure

    from vlmkit.ablate.report import collect, plot

    tiny_spec.write_text(tiny_spec.read_text() + 'plot: ["eval:val/accuracy", "fit:divergence/events"]\n')
    ablation = _sweep(tiny_spec, tmp_path, fake_vlmkit)
    assert ablation.plot == ("eval:val/accuracy", "fit:divergence/events")

    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda figure, *args, **kwargs: drawn.append(figure))
    plot(ablation, collect(ablation, tmp_path / "out"), tmp_path / "plot.png")
    bars = drawn[0].axes[0].patches
    assert len(bars) == 2 * 2  # two arms x two metrics
    heights = sorted(round(bar.get_height(), 3) for bar in bars)
    assert heights == [0.0, 0.0, 0.51, 0.61]  # divergences 0; mean accuracy of arm a and arm b
    legend = [text.get_text() for text in drawn[0].axes[0].get_legend().get_texts()]
    assert {"accuracy", "divergences"} <= set(legend)
