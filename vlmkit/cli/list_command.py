"""``vlmkit list``: the recipes with their purpose, and vlmkit's parts per kind with their arguments.

vlmkit list                 # recipes, then every kind of part
vlmkit list recipes         # recipes only (reads YAML only: no torch)
vlmkit list connectors      # one kind (vision-encoders, connectors, fusions, language-models, data-modules,
                            # sources, callbacks)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from vlmkit.cli.recipe_files import find_recipes
from vlmkit.cli.suggest import did_you_mean

_SLUG = {
    "vision encoders": "vision-encoders",
    "connectors": "connectors",
    "fusions": "fusions",
    "language models": "language-models",
    "data modules": "data-modules",
    "sources": "sources",
    "callbacks": "callbacks",
}
_FLAG = {
    "vision encoders": "--model.vlm.vision_encoder",
    "connectors": "--model.vlm.connector",
    "fusions": "--model.vlm.fusion",
    "language models": "--model.vlm.language_model",
    "data modules": "--data",
    "sources": "data: sources / val_sources (MixtureDataModule)",
    "callbacks": "--trainer.callbacks+=",
}


def recipes_table(root: Path) -> str:
    """Every recipe under ``root`` with its kind and purpose; fragments name what they are layered on."""
    infos = find_recipes(root)
    width = max((len(i.path.relative_to(root).as_posix()) for i in infos), default=0)
    lines = [
        f"recipes ({root}/): vlmkit fit --config {root}/<recipe>; a fragment goes after the recipe it names "
        f"(vlmkit fit --config <recipe> --config {root}/<fragment>); ablations: vlmkit ablate --config ...",
    ]
    for info in infos:
        name = info.path.relative_to(root).as_posix()
        on = (
            f" [fragment, on {' + '.join(Path(b).name for b in info.base) or 'a recipe'}]"
            if info.kind == "fragment"
            else ""
        )
        tag = " [ablation]" if info.kind == "ablation" else on
        lines.append(f"  {name:<{width}}  {info.purpose}{tag}")
    return "\n".join(lines)


def parts_table(kinds: Sequence[str] | None = None) -> str:
    """Vlmkit's parts of each kind (all when ``kinds`` is ``None``): class path, summary, constructor arguments."""
    from vlmkit.cli.parts import KINDS, arguments, parts, public_path, summary

    lines = []
    for kind in KINDS:
        if kinds is not None and _SLUG[kind.title] not in kinds:
            continue
        lines.append(f"{kind.title} ({_FLAG[kind.title]}):")
        for cls in parts(kind):
            lines.append(f"  {public_path(cls)}  {summary(cls)}")
            args = arguments(cls)
            lines.append(f"      {', '.join(args) if args else '(no arguments)'}")
    return "\n".join(lines)


def default_recipes_folder() -> Path:
    """``recipes`` in the working directory, else the one beside the installed package (a source checkout)."""
    here = Path("recipes")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "recipes"


def main(argv: Sequence[str] | None = None) -> None:
    """Print the recipes and/or the parts."""
    parser = argparse.ArgumentParser(prog="vlmkit list", description=__doc__.splitlines()[0])
    parser.add_argument(
        "what",
        nargs="*",
        default=[],
        help=f"recipes, parts, or a kind of part: {', '.join(_SLUG.values())} (default: everything)",
    )
    parser.add_argument("--recipes-dir", type=Path, default=None, help="folder of recipes (default: ./recipes)")
    options = parser.parse_args(argv)
    valid = ["recipes", "parts", *_SLUG.values()]
    for word in options.what:
        if word not in valid:
            parser.exit(2, f"vlmkit: error: vlmkit list {word}: unknown{did_you_mean(word, valid, len(valid))}\n")
    what = set(options.what) or {"recipes", "parts"}
    out = []
    if "recipes" in what:
        out.append(recipes_table(options.recipes_dir or default_recipes_folder()))
    kinds = None if "parts" in what else [w for w in what if w in _SLUG.values()]
    if kinds is None or kinds:
        out.append(parts_table(kinds))
    print("\n\n".join(out))
