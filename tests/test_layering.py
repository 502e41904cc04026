"""The import graph of ``vlmkit`` flows one way (docs/STYLE.md, "Layers").

Every module belongs to a layer; a module may import its own package and any package of a lower layer, never one of
its own layer or above. Imports are read with ``ast`` from the source, so function-local imports count as much as
module-level ones, and so do imports under ``if TYPE_CHECKING:`` (a type a module names is part of what a reader must
know, so it obeys the same rule). Only code under ``if __name__ == "__main__":`` is exempt: it is an entry point, the
top of the graph by definition. A deprecated alias module (kept for one release so that old import paths and YAML
``class_path``s still work) may import the module that replaced it and ``vlmkit.deprecation``, and nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vlmkit"

LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("foundation", frozenset({"errors", "checks", "interfaces", "dtypes", "deprecation"})),
    ("kernels", frozenset({"attention", "quantization"})),
    ("text", frozenset({"text"})),
    ("parts", frozenset({"vision", "connectors", "fusion", "llm"})),
    ("adapters", frozenset({"adapters"})),
    ("trainability", frozenset({"trainability"})),
    ("model", frozenset({"model"})),
    ("data", frozenset({"data"})),
    ("eval", frozenset({"eval"})),
    ("training", frozenset({"training"})),
    ("tools", frozenset({"export", "report", "interop", "ablate"})),
    ("inference", frozenset({"inference"})),
    ("cli", frozenset({"cli"})),
    ("entry point", frozenset({"__main__"})),
)
"""Lowest first. ``vlmkit/<name>.py`` and ``vlmkit/<name>/`` are both the unit ``<name>``."""

DEPRECATED_ALIASES: dict[str, str] = {
    "vlmkit.eval.lmms_eval_adapter": "vlmkit.interop.lmms_eval",
    "vlmkit.data.shard_datamodule": "vlmkit.data.mixture_datamodule",
    "vlmkit.data.sources": "vlmkit.data.synthetic_sources",
    "vlmkit.data.webdataset_source": "vlmkit.data.shard_source",
    "vlmkit.training.callbacks": "vlmkit.training.prediction_writer",
}
"""Alias module -> the module it re-exports (warning through ``vlmkit.deprecation``); removed in the next release."""


def layer_of(unit: str) -> int:
    for index, (_, units) in enumerate(LAYERS):
        if unit in units:
            return index
    raise KeyError(unit)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str | None:
    """``vlmkit.data.render`` -> ``data``; the package root ``vlmkit`` -> ``None``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _guarded_nodes(tree: ast.AST) -> tuple[set[int], set[int]]:
    """Ids of the nodes under ``if TYPE_CHECKING:`` and under ``if __name__ == "__main__":``."""
    type_checking, main = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            target = type_checking if "TYPE_CHECKING" in test else main if "__main__" in test else None
            if target is not None:
                for child in node.body:
                    target.update(id(n) for n in ast.walk(child))
    return type_checking, main


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, imported module, under TYPE_CHECKING)`` of every vlmkit import in ``path`` (entry points excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    type_checking, main = _guarded_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in main:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base]
        for name in names:
            if name == "vlmkit" or name.startswith("vlmkit."):
                found.append((node.lineno, name, id(node) in type_checking))
    return found


def modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def back_edges() -> list[str]:
    """Every import that goes sideways or up, as ``file:line source -> target (layer -> layer)``."""
    problems = []
    for path in modules():
        source = module_name(path)
        unit = unit_of(source)
        if unit is None:  # the package root re-exports lazily (import_module by name), it imports nothing
            problems += [f"{source}: imports {name} at line {line}" for line, name, _ in imports(path)]
            continue
        for line, target, guarded in imports(path):
            target_unit = unit_of(target)
            if DEPRECATED_ALIASES.get(source) == target or target_unit == unit or target == "vlmkit.deprecation":
                continue
            where = f"{path.relative_to(ROOT.parent)}:{line} {source} -> {target}"
            if target_unit is None:
                problems.append(f"{where} (the package root)")
                continue
            try:
                low, high = layer_of(target_unit), layer_of(unit)
            except KeyError:  # reported by test_every_module_belongs_to_a_layer
                continue
            if low >= high:
                kind = " (TYPE_CHECKING)" if guarded else ""
                problems.append(f"{where}{kind}: {LAYERS[high][0]} -> {LAYERS[low][0]}")
    return problems


def test_every_module_belongs_to_a_layer():
    units = {unit_of(module_name(path)) for path in modules()} - {None}
    placed = set().union(*(names for _, names in LAYERS))
    assert units <= placed, (
        f"place these in LAYERS (tests/test_layering.py and docs/STYLE.md): {sorted(units - placed)}"
    )


def test_imports_flow_one_way():
    problems = back_edges()
    assert not problems, "imports against the layers (lowest first: {}):\n{}".format(
        " < ".join(name for name, _ in LAYERS), "\n".join(problems)
    )


def test_deprecated_aliases_only_re_export():
    for alias, target in DEPRECATED_ALIASES.items():
        path = ROOT.parent / (alias.replace(".", "/") + ".py")
        assert path.is_file(), f"{alias} is listed as a deprecated alias but does not exist"
        found = {name for _, name, _ in imports(path)}
        assert found == {target, "vlmkit.deprecation"}, f"{alias} must import only {target}, imports {sorted(found)}"
        assert "warn_deprecated(" in path.read_text(encoding="utf-8"), f"{alias} must warn that it is deprecated"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from vlmkit.data import x\n", "vlmkit.data"),
        ("def f():\n    from vlmkit.training.module import VLMModule\n", "vlmkit.training.module"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vlmkit.cli import main\n", "vlmkit.cli"),
    ],
)
def test_every_kind_of_import_is_seen(tmp_path, monkeypatch, source, expected):
    package = tmp_path / "vlmkit" / "llm"
    package.mkdir(parents=True)
    (package / "probe.py").write_text(source)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path / "vlmkit")
    assert [name for _, name, _ in imports(package / "probe.py")] == [expected]
    assert any(expected in problem for problem in back_edges())


def test_an_entry_point_block_may_import_the_cli(tmp_path, monkeypatch):
    package = tmp_path / "vlmkit"
    package.mkdir()
    (package / "report.py").write_text('if __name__ == "__main__":\n    from vlmkit.cli import main\n')
    monkeypatch.setattr(f"{__name__}.ROOT", package)
    assert imports(package / "report.py") == [] and back_edges() == []


def test_the_style_guide_states_these_layers():
    """``docs/STYLE.md`` ("Layers") lists the same layers, in the same order, as this test enforces."""
    import re

    text = (ROOT.parent / "docs" / "STYLE.md").read_text(encoding="utf-8")
    table = text[text.index("| layer | units") :].split("\n\n")[0].splitlines()[2:]
    stated = [(row.split("|")[1].strip(), frozenset(re.findall(r"`(\w+)`", row.split("|")[2]))) for row in table]
    assert stated == list(LAYERS)
