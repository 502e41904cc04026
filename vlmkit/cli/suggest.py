"""Close matches for what a user mistyped: ``did you mean ...`` (difflib), with the valid names when they are few."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from vlmkit.errors import UserInputError


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``word`` (difflib's ratio >= 0.6).

    Dotted names (``--trainer.max_steps``, ``vlmkit.connectors.MLPProjection``) are compared by their last component
    among the candidates with the same prefix first, so a shared prefix does not make every name look close.
    """
    candidates = list(dict.fromkeys(candidates))
    prefix, _, name = word.rpartition(".")
    for pool in ([c for c in candidates if c.rpartition(".")[0] == prefix], candidates):
        by_name: dict[str, str] = {}
        for candidate in pool:
            by_name.setdefault(candidate.rpartition(".")[2], candidate)
        if prefix and by_name:
            matches = difflib.get_close_matches(name, list(by_name), n=n, cutoff=0.6)
            if matches:
                return [by_name[m] for m in matches]
    return difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str], show_all: int = 12) -> str:
    """``"; did you mean X?"`` (and ``" Valid: a, b, c"`` when there are at most ``show_all`` names), or ``""``."""
    candidates = list(dict.fromkeys(candidates))
    matches = close_matches(word, candidates)
    text = f"; did you mean {' or '.join(matches)}?" if matches else ""
    if 0 < len(candidates) <= show_all:
        text += f" Valid: {', '.join(candidates)}" if matches else f"; valid: {', '.join(candidates)}"
    return text


def unknown_command(command: str, commands: Iterable[str]) -> UserInputError:
    """The error for ``vlmkit <command>`` with a command that does not exist."""
    commands = list(commands)
    return UserInputError(f"unknown command {command!r}{did_you_mean(command, commands, show_all=len(commands))}")
