"""vlmkit's parts by kind, found in the packages that export them.

What ``vlmkit list`` prints and what a part slot's ``--help`` names.

A class is a part of a kind when the kind's packages export it (``__init__``) and has the methods of the kind's contract
(:mod:`vlmkit.interfaces`) or derives from the kind's base class (data modules, callbacks); nothing is registered by
hand, so a new part shows up by being written.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from vlmkit.interfaces import Connector, Fusion, LanguageModel, VisionEncoder


@dataclass(frozen=True)
class Kind:
    """A kind of part: where its classes live, the slot that takes them, what they must have."""

    title: str
    packages: tuple[str, ...]
    slots: tuple[str, ...]
    contract: type | None = None
    base: str | None = None  # "module.Class" they derive from
    suffix: str | None = None  # or: the class name ends with it


KINDS = (
    Kind("vision encoders", ("vlmkit.vision",), ("vision_encoder",), contract=VisionEncoder),
    Kind("connectors", ("vlmkit.connectors",), ("connector",), contract=Connector),
    Kind("fusions", ("vlmkit.fusion",), ("fusion",), contract=Fusion),
    Kind("language models", ("vlmkit.llm",), ("language_model",), contract=LanguageModel),
    Kind("data modules", ("vlmkit.data", "vlmkit.eval"), ("data",), base="lightning.pytorch.LightningDataModule"),
    Kind("sources", ("vlmkit.data",), ("sources", "val_sources"), suffix="Source"),
    Kind("callbacks", ("vlmkit.training", "vlmkit.ablate"), ("callbacks",), base="lightning.pytorch.Callback"),
)
"""The kinds ``vlmkit list`` prints, in order."""


def _members(protocol: type) -> list[str]:
    """The methods and properties of a contract (its data attributes are set per instance: not checkable here)."""
    return [
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    ]


def _fits(cls: type, kind: Kind) -> bool:
    if kind.contract is not None:
        from torch import nn

        return issubclass(cls, nn.Module) and all(hasattr(cls, name) for name in _members(kind.contract))
    if kind.base is not None:
        module, name = kind.base.rsplit(".", 1)
        return issubclass(cls, getattr(importlib.import_module(module), name))
    return kind.suffix is not None and cls.__name__.endswith(kind.suffix)


def public_path(cls: type) -> str:
    """The shortest import path of ``cls``: its package's (``vlmkit.connectors.MLPProjection``) if it exports it."""
    parts = cls.__module__.split(".")
    for n in range(2, len(parts) + 1):
        module = ".".join(parts[:n])
        try:
            if getattr(importlib.import_module(module), cls.__name__, None) is cls:
                return f"{module}.{cls.__name__}"
        except ImportError:
            continue
    return f"{cls.__module__}.{cls.__name__}"


def parts(kind: Kind) -> list[type]:
    """The classes of ``kind`` in vlmkit, sorted by import path."""
    found: dict[str, type] = {}
    for package in kind.packages:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", None) or list(vars(module)):
            cls = getattr(module, name, None)
            if (
                inspect.isclass(cls)
                and not name.startswith("_")
                and cls.__module__.startswith(package)
                and not getattr(cls, "_is_protocol", False)
                and not inspect.isabstract(cls)
                and _fits(cls, kind)
            ):
                found[public_path(cls)] = cls
    return [found[path] for path in sorted(found)]


def kind_of_slot(slot: str) -> Kind | None:
    """The kind a parameter named ``slot`` (``connector``, ``vision_encoder``, ...) takes, if any."""
    return next((kind for kind in KINDS if slot in kind.slots), None)


def summary(cls: type) -> str:
    """The first line of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    return doc.splitlines()[0] if doc else ""


def arguments(cls: type) -> list[str]:
    """``name: type = default`` for each constructor argument of ``cls``."""
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return []
    out = []
    for name, param in list(signature.parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        text = name
        if param.annotation is not param.empty:
            annotation = (
                param.annotation if isinstance(param.annotation, str) else inspect.formatannotation(param.annotation)
            )
            text += f": {annotation}"
        if param.default is not param.empty:
            text += f" = {param.default!r}"
        out.append(text)
    return out
