"""Recipe files read before anything is built: purpose lines, fragment detection, ``--config`` checks."""

from pathlib import Path

import pytest

from vlmkit.cli.recipe_files import RecipeError, base_configs, check_configs, classify, find_recipes, purpose

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"


def test_purpose_is_the_opening_comments_first_clause():
    text = (
        "# Quickstart: trains a tiny VLM from scratch on CPU (or on the GPU) -- a SigLIP-style encoder.\n#\nseed: 0\n"
    )
    assert purpose(text) == "Quickstart: trains a tiny VLM from scratch on CPU (or on the GPU)"
    text = "# MAPL's mapping network (Manas et al. 2023). More.\nx: 1\n"
    assert purpose(text) == "MAPL's mapping network (Manas et al. 2023)"  # "al." does not end the sentence
    assert purpose("# A; b (c; d) e\n") == "A"
    assert purpose("# x (a; b) e; f\n") == "x (a; b) e"  # a clause end inside parentheses is not one
    assert purpose("seed: 0\n") == ""


def test_every_shipped_recipe_has_a_purpose_and_a_kind():
    infos = find_recipes(RECIPES)
    assert len(infos) == len(list(RECIPES.rglob("*.yaml")))
    kinds = {info.path.relative_to(RECIPES).as_posix(): info for info in infos}
    assert all(info.purpose for info in infos), [i.path for i in infos if not i.purpose]
    assert kinds["quickstart.yaml"].kind == "recipe"
    assert kinds["pretrain/tiny_stage1.yaml"].kind == "recipe"
    assert kinds["ablations/fusion.yaml"].kind == "ablation"
    for fragment, base in (
        ("finetune/lora.yaml", ("recipes/quickstart.yaml",)),
        ("pretrain/tiny_stage2.yaml", ("recipes/pretrain/tiny_stage1.yaml",)),
        ("fusion/cross_attention_lora.yaml", ("recipes/quickstart.yaml", "recipes/fusion/cross_attention.yaml")),
    ):
        assert kinds[fragment].kind == "fragment" and kinds[fragment].base == base


def test_classify_by_what_the_yaml_builds():
    assert classify({"model": {"vlm": {"class_path": "x"}}, "data": {"class_path": "y"}}) == "recipe"
    assert classify({"model": {"vlm": {"init_args": {"train_language_model": "lora"}}}}) == "fragment"
    assert classify({"model": {"vlm": {"class_path": "x"}}}) == "fragment"  # no data
    assert classify({"arms": {}}) == "ablation"
    assert classify(None) == "fragment"


def test_base_configs_come_from_the_command_in_the_opening_comment():
    text = "# Layered:\n#\n#   vlmkit fit --config a.yaml --config b.yaml --config recipes/x/frag.yaml --y 1\nk: 1\n"
    assert base_configs(text, "recipes/x/frag.yaml") == ("a.yaml", "b.yaml")
    assert base_configs("# no command\n", "recipes/x/frag.yaml") == ()


def test_a_fragment_first_says_which_recipe_goes_before_it(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(RecipeError) as err:
        check_configs(["fit", "--config", "recipes/finetune/lora.yaml"])
    message = str(err.value)
    assert "recipes/finetune/lora.yaml is a fragment" in message and "put recipes/quickstart.yaml first" in message
    assert "\n" not in message
    with pytest.raises(RecipeError, match="put recipes/quickstart.yaml first"):
        check_configs(["fit", "--config", "recipes/finetune/lora.yaml", "--config", "recipes/quickstart.yaml"])
    check_configs(["fit", "--config", "recipes/quickstart.yaml", "--config", "recipes/finetune/lora.yaml"])  # fine


def test_missing_file_and_ablation_spec_are_named(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(
        RecipeError, match=r"recipes/quickstrat.yaml: no such file; did you mean recipes/quickstart.yaml"
    ):
        check_configs(["fit", "--config=recipes/quickstrat.yaml"])
    with pytest.raises(RecipeError, match=r"ablation spec.*vlmkit ablate --config recipes/ablations/fusion.yaml"):
        check_configs(["fit", "-c", "recipes/ablations/fusion.yaml"])
    check_configs(["fit", "--trainer.max_steps", "3"])  # no --config: nothing to check
