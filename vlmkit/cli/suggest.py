"""Close matches for what a user mistyped: ``did you mean ...`` (difflib), with the valid names when they are few."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from vlmkit.errors import UserInputError


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``word`` (difflib's ratio >= 0.6; also by the last dotted component)."""
    candidates = list(dict.fromkeys(candidates))
    matches = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    if not matches and "." in word:  # a class path: compare the class names
        by_name = {c.rsplit(".", 1)[-1]: c for c in candidates}
        matches = [by_name[m] for m in difflib.get_close_matches(word.rsplit(".", 1)[-1], list(by_name), n=n)]
    return matches


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
