"""Recipe files before anything is built: their one-line purpose, whether one is a fragment, ``--config`` checks.

Reads YAML only (no torch, Lightning or transformers), so ``vlmkit list`` and the checks of ``vlmkit fit --config ...``
cost milliseconds. A *complete* recipe builds a model and its data (``model.vlm`` has a ``class_path`` and ``data``
has one); a *fragment* changes a recipe it is layered on, and its opening comment shows the command with that recipe
first (``vlmkit fit --config recipes/quickstart.yaml --config <fragment>``). Ablation specs (``vlmkit ablate``) are
recognised by their ``arms``.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from vlmkit.errors import UserInputError

RecipeKind = Literal["recipe", "fragment", "ablation"]

_CLAUSE_END = re.compile(r" -- |; |: |(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.(?: |$)")


class RecipeError(UserInputError, ValueError):
    """A ``--config`` file that does not exist, does not parse, or cannot be used alone."""


@dataclass(frozen=True)
class RecipeInfo:
    """What ``vlmkit list`` shows of a recipe file.

    Attributes:
        path: The file.
        kind: ``recipe`` (builds a model and data alone), ``fragment`` (layered on a recipe) or ``ablation``
            (a ``vlmkit ablate`` spec).
        purpose: The first sentence of the file's opening comment.
        base: For a fragment, the ``--config`` files its opening comment puts before it (empty if it names none).
    """

    path: Path
    kind: RecipeKind
    purpose: str
    base: tuple[str, ...] = ()


def opening_comment(text: str) -> str:
    """The ``#`` lines a YAML file opens with, without the ``#``, joined by newlines."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return "\n".join(lines)


def purpose(text: str, width: int = 150) -> str:
    """The opening comment's first clause, on one line.

    ``Title: what it does`` up to ``--``, ``;``, ``:`` or the sentence's end (outside parentheses), shortened to
    about ``width`` characters at a word (marked ``...``).
    """
    words = " ".join(opening_comment(text).split("\n\n")[0].split())
    title, sep, rest = words.partition(": ")
    head, body = (title + ": ", rest) if sep and len(title) <= 60 else ("", words)
    ends = (
        m.start() for m in _CLAUSE_END.finditer(body) if body.count("(", 0, m.start()) == body.count(")", 0, m.start())
    )
    cut = next(ends, len(body))  # the first clause end outside parentheses
    line = (head + body[:cut]).rstrip(" .,")
    if len(line) > width:
        line = line[: line.rfind(" ", 0, width)].rstrip(" ,;(") + " ..."
    return line


def base_configs(text: str, path: str | Path) -> tuple[str, ...]:
    """The ``--config`` files a fragment's opening comment puts before it in a ``vlmkit`` command."""
    name = Path(path).as_posix()
    comment = opening_comment(text).replace("\\\n", " ")
    for line in comment.splitlines():
        if "vlmkit " not in line or "--config" not in line:
            continue
        try:
            words = shlex.split(line[line.index("vlmkit ") :])
        except ValueError:
            continue
        configs = [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("--config", "-c")]
        for i, config in enumerate(configs):
            if i and (config == name or name.endswith("/" + config) or config.endswith(Path(path).name)):
                return tuple(configs[:i])
    return ()


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def classify(config: Any) -> RecipeKind:
    """What a recipe's YAML is.

    ``recipe`` if it builds a model (``model.vlm.class_path``) and its data (``data.class_path``) alone,
    ``ablation`` for a ``vlmkit ablate`` spec (``arms``), else ``fragment``.
    """
    if isinstance(config, dict) and "arms" in config:
        return "ablation"
    if _get(config, "model", "vlm", "class_path") and _get(config, "data", "class_path"):
        return "recipe"
    return "fragment"


def read_recipe(path: str | Path) -> RecipeInfo:
    """The kind, purpose and (for a fragment) base recipes of a recipe file.

    Raises:
        RecipeError: If the file does not exist or is not YAML (the message names it).
    """
    path = Path(path)
    text = _read(path)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"--config {path} is not valid YAML: {' '.join(str(err).split())}") from err
    kind = classify(config)
    return RecipeInfo(path, kind, purpose(text), base_configs(text, path) if kind == "fragment" else ())


def _read(path: Path) -> str:
    if not path.is_file():
        raise RecipeError(f"--config {path}: no such file{_did_you_mean_file(path)}")
    return path.read_text(encoding="utf-8")


def _did_you_mean_file(path: Path) -> str:
    folder = path.parent if path.parent.is_dir() else Path(".")
    candidates = [p.as_posix() for p in folder.rglob("*.yaml")] if folder != Path(".") else []
    if path.parent.is_dir() and folder == Path("."):
        candidates = [p.as_posix() for p in Path(".").glob("*.yaml")]
    if not candidates and Path("recipes").is_dir():
        candidates = [p.as_posix() for p in Path("recipes").rglob("*.yaml")]
    close = difflib.get_close_matches(path.as_posix(), candidates, n=2, cutoff=0.8)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def config_files(argv: list[str]) -> list[str]:
    """The ``--config``/``-c`` values of a command line, in order."""
    files = []
    for i, word in enumerate(argv):
        if word in ("--config", "-c") and i + 1 < len(argv):
            files.append(argv[i + 1])
        elif word.startswith("--config="):
            files.append(word.split("=", 1)[1])
    return files


def check_configs(argv: list[str]) -> None:
    """Check the ``--config`` files of a ``vlmkit`` command before anything is built.

    Every file must exist and parse; the first must be a complete recipe unless a later one is (a fragment first
    would be overridden by it) or the command line gives the model and data itself; an ablation spec belongs to
    ``vlmkit ablate``.

    Raises:
        RecipeError: Naming the file and what to do (``this is a fragment: put recipes/quickstart.yaml first``).
    """
    files = [f for f in config_files(argv) if not f.lstrip().startswith(("{", "["))]  # inline YAML is jsonargparse's
    if not files:
        return
    infos = [read_recipe(f) for f in files]
    for info in infos:
        if info.kind == "ablation":
            raise RecipeError(
                f"--config {info.path} is an ablation spec, not a recipe: run `vlmkit ablate --config {info.path}`"
            )
    first = infos[0]
    if first.kind == "recipe" or any(word.startswith(("--model.vlm=", "--data=")) for word in argv):
        return
    if "--model.vlm" in argv and "--data" in argv:
        return
    complete = [info for info in infos[1:] if info.kind == "recipe"]
    if complete:
        raise RecipeError(
            f"--config {first.path} is a fragment and {complete[0].path} a complete recipe: put {complete[0].path} "
            f"first (later files change earlier ones)"
        )
    if first.base:
        command = " ".join(f"--config {b}" for b in first.base)
        where = f"put {' '.join(first.base)} first"
    else:
        command, where = (
            "--config recipes/quickstart.yaml",
            "put a complete recipe (e.g. recipes/quickstart.yaml) first",
        )
    raise RecipeError(
        f"--config {first.path} is a fragment (it builds no model or data alone): {where}, as in "
        f"`vlmkit {_subcommand(argv)} {command} --config {first.path}`"
    )


def _subcommand(argv: list[str]) -> str:
    return next((word for word in argv if word in ("fit", "validate", "test", "predict")), "fit")


def find_recipes(root: str | Path = "recipes") -> list[RecipeInfo]:
    """Every ``*.yaml`` under ``root``, sorted by path, with its kind and purpose."""
    return [read_recipe(path) for path in sorted(Path(root).rglob("*.yaml"))]
