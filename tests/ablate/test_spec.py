from pathlib import Path

import pytest

from vlmkit.ablate.cli import _check_config_files
from vlmkit.ablate.spec import SpecError, load_ablation

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "recipes" / "ablations").glob("*.yaml"))


def test_the_tiny_spec_parses_into_stages_arms_metrics_and_comparisons(tiny_spec):
    ablation = load_ablation(tiny_spec)
    assert ablation.name == "tiny" and ablation.seeds == 3
    assert [(s.name, s.command) for s in ablation.stages] == [("fit", "fit"), ("eval", "validate")]
    assert [a.name for a in ablation.arms] == ["a", "b"] and ablation.arm("b").paper == 55.0
    metric = ablation.metrics[1]
    assert (metric.stage, metric.name, metric.higher_is_better) == ("fit", "divergence/events", False)
    assert ablation.metrics[0].stage == "eval"
    assert ablation.comparisons[0].metric == "eval:val/accuracy"
    assert ablation.smoke_args == {"*": ("--trainer.max_steps=1",), "eval": ("--data.init_args.num_val=4",)}
    assert ablation.needs_pretrained()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("title: Tiny ablation", "titel: Tiny ablation"), r"top level: unknown key\(s\) \['titel'\]"),
        (("{arm: b, reference: a,", "{arm: c, reference: a,"), r"comparisons\[0\].arm: 'c' is not an arm"),
        (("expect: better}", "expect: higher}"), r"comparisons\[0\].expect: 'higher' is not one of"),
        (("{ckpt:fit}", "{ckpt:eval}"), r"\{ckpt:eval\} must name an earlier stage, one of \['fit'\]"),
        (("{pretrained}/lm", "{pretrianed}/lm"), r"base: unknown placeholder \{pretrianed\}"),
        (("command: validate", "command: predict"), r"stages\[1\].command: 'predict' is not one of"),
        (('key: "eval:val/accuracy"', 'key: "test:val/accuracy"'), r"metrics\[0\].key: stage 'test'"),
        (("{name: b, label: Arm B", "{name: a, label: Arm B"), r"arms: arm names must be unique"),
        (("paper: 55.0", "paper: high"), r"arms\[1\].paper: expected a number"),
    ],
)
def test_a_malformed_spec_is_refused_naming_file_and_key(tiny_spec, edit, message):
    tiny_spec.write_text(tiny_spec.read_text().replace(*edit))
    with pytest.raises(SpecError, match=message) as error:
        load_ablation(tiny_spec)
    assert str(tiny_spec) in str(error.value)


def test_expect_similar_needs_a_tolerance(tiny_spec):
    tiny_spec.write_text(tiny_spec.read_text().replace("expect: better}", "expect: similar}"))
    with pytest.raises(SpecError, match="needs a tolerance"):
        load_ablation(tiny_spec)


def test_a_missing_config_file_is_named(tiny_spec):
    tiny_spec.write_text(tiny_spec.read_text().replace("recipes/quickstart.yaml", "recipes/nope.yaml"))
    with pytest.raises(SpecError, match="config file 'recipes/nope.yaml' not found .* repository root"):
        _check_config_files(load_ablation(tiny_spec))


def test_the_suite_covers_the_papers_ablations():
    names = {path.stem for path in SHIPPED}
    assert {
        "fusion", "full_vs_lora", "visual_tokens", "aspect_ratio", "captions", "ocr_data", "connectors",
        "perceiver_depth", "modality_projection", "image_splitting", "backbones",
    } <= names  # fmt: skip


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_ablation_parses_names_existing_configs_and_opens_with_its_command(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ablation = load_ablation(path)
    _check_config_files(ablation)
    header = [line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#")]
    assert f"vlmkit ablate --config recipes/ablations/{path.name}" in header
    assert ablation.paper.get("reference") and ablation.comparisons, "cite the paper and say what it expects"
    assert len(ablation.arms) >= 2 and ablation.seeds >= 3
    assert ablation.smoke_args.get("*"), "--smoke must shorten every stage"


def test_plotted_metrics_default_to_the_primary_one_and_must_be_metrics(tiny_spec):
    assert load_ablation(tiny_spec).plot == ("eval:val/accuracy",)
    tiny_spec.write_text(tiny_spec.read_text() + 'plot: ["eval:val/acuracy"]\n')
    with pytest.raises(SpecError, match=r"plot: 'eval:val/acuracy' is not one of the metrics"):
        load_ablation(tiny_spec)
