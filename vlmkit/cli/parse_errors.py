"""jsonargparse's errors as one line that says what to do (instead of ~50 lines of usage).

The line names the option or class path at fault, its close matches and the valid names.

Handles an unknown option (``--trainer.max_stpes``), an unknown class path (``--model.vlm.connector
vlmkit.connectors.MLPProjektion``: vlmkit's connectors are suggested), an unknown argument of a part
(``--model.vlm.connector.num_latentz``: the class's arguments), and a value outside a fixed set
(``--trainer.precision bf17``). Anything else keeps jsonargparse's message, joined on one line.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from vlmkit.cli.suggest import did_you_mean

_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)$", re.S)
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_BAD_PATH = re.compile(r"Expected a path but (\S+) either not accessible or invalid")
_NO_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_NOT_ACCEPTED = re.compile(r"Option '([\w.]+)' is not accepted")
_GOT_CLASS = re.compile(r"class_path='([\w.]+)'")
_GIVEN_CLASS = re.compile(r"Problem with given class_path '([\w.]+)':\s*\n\s*Option")
_GIVEN_VALUE = re.compile(r"Given value: (.*)$", re.M)
_LITERAL = re.compile(r"Literal\[([^\]]*)\]")


def option_strings(parser: Any) -> list[str]:
    """Every ``--option`` of ``parser`` and of its subcommands' parsers."""
    options = [o for o in getattr(parser, "_option_string_actions", {}) if o.startswith("--")]
    subcommands = getattr(parser, "_subcommands_action", None)
    for sub in getattr(subcommands, "choices", {}).values() if subcommands is not None else []:
        options += option_strings(sub)
    return sorted(set(options))


def _flag(keys: list[str]) -> str:
    return "--" + ".".join(k for k in ".".join(keys).split(".") if k not in ("init_args", "class_path", "dict_kwargs"))


def _class_arguments(class_path: str) -> list[str]:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _classes_for(slot: str, module: str) -> list[str]:
    from vlmkit.cli.parts import kind_of_slot, parts, public_path

    kind = kind_of_slot(slot)
    if kind is not None:
        return [public_path(cls) for cls in parts(kind)]
    try:
        found = importlib.import_module(module)
    except ImportError:
        return []
    return [f"{module}.{n}" for n, v in vars(found).items() if inspect.isclass(v) and not n.startswith("_")]


def one_line_parse_error(message: str, parser: Any = None) -> str:
    """What went wrong, which name was meant, and the valid names, in one line."""
    unrecognized = _UNRECOGNIZED.match(message.strip())
    if unrecognized:
        words = unrecognized.group(1).split()
        options = [w.split("=", 1)[0] for w in words if w.startswith("--")]
        if options and parser is not None:
            valid = option_strings(parser)
            hints = [f"unknown option {o}{did_you_mean(o, valid, show_all=0)}" for o in options]
            return "; ".join(hints) + " (vlmkit <command> --help lists every option)"
        return f"unrecognized arguments: {' '.join(words)} (vlmkit --help lists the commands)"
    keys = _PARSER_KEY.findall(message)
    flag = _flag(keys) if keys else ""
    bad_path = _BAD_PATH.search(message)
    no_attribute = _NO_ATTRIBUTE.search(message)
    if bad_path or no_attribute:
        given = bad_path.group(1) if bad_path else f"{no_attribute.group(1)}.{no_attribute.group(2)}"
        module = given.rpartition(".")[0]
        slot = keys[-1].split(".")[-1] if keys else ""
        candidates = _classes_for(slot, module)
        return f"{flag} {given}: no such class{did_you_mean(given, candidates)}".strip()
    not_accepted = _NOT_ACCEPTED.search(message)
    if not_accepted:
        option = not_accepted.group(1)
        owner = _GOT_CLASS.search(message) or _GIVEN_CLASS.search(message)
        class_path = owner.group(1) if owner else ""
        valid = _class_arguments(class_path) if class_path else []
        name = f"{flag}.{option}" if flag else option
        owner_text = class_path or "this class"
        return f"{name}: {owner_text} has no argument {option!r}{did_you_mean(option, valid)}"
    literal = _LITERAL.findall(message)
    given = _GIVEN_VALUE.search(message)
    if literal and given:
        value = given.group(1).strip()
        choices = [c.strip().strip("'\"") for group in literal for c in group.split(",")]
        return f"{flag} {value}: not a valid value{did_you_mean(value, choices, show_all=len(choices))}".strip()
    return " ".join(message.split())
