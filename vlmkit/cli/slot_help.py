"""``--help`` of a part slot names vlmkit's implementations of it, not every ``nn.Module`` subclass imported.

A slot such as ``VisionLanguageModel(connector=...)`` is typed with what any part must be (``nn.Module``, a factory
returning one), so jsonargparse's help lists every subclass it can see: ~235 torch, timm and transformers classes and
none of vlmkit's parts in particular. In the ``vlmkit`` command line only, the help of a slot named like a kind of
part (``vision_encoder``, ``connector``, ``fusion``, ``language_model``, ``data``, ``sources``, ``callbacks``) lists
that kind's classes (:mod:`vlmkit.cli.parts`); any class path is still accepted.
"""

from __future__ import annotations

from jsonargparse._typehints import ActionTypeHint

from vlmkit.cli.parts import kind_of_slot, parts, public_path

_original = ActionTypeHint.extra_help


def _extra_help(self: ActionTypeHint) -> str:
    kind = kind_of_slot(str(getattr(self, "dest", "")).split(".")[-1])
    if kind is None:
        return _original(self)
    names = ", ".join(public_path(cls) for cls in parts(kind))
    return f", vlmkit's {kind.title}: {names} (or any class path; `vlmkit list` shows their arguments)"


def install_slot_help() -> None:
    """Make the help of part slots name vlmkit's parts (idempotent; the ``vlmkit`` command line calls it)."""
    ActionTypeHint.extra_help = _extra_help
