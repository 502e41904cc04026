"""Where a run's checkpoints and logs go, so that running a command twice means the same thing.

A run folder is the trainer's ``default_root_dir`` (each recipe names one, e.g. ``runs/quickstart``). ``vlmkit fit``
checkpoints to ``<run>/checkpoints/`` (a ``ModelCheckpoint`` without a ``dirpath``), and a rerun overwrites
``last.ckpt`` there instead of writing ``last-v1.ckpt`` beside it: the path a README command or the next stage
names stays the newest. TensorBoard logs keep Lightning's ``<run>/lightning_logs/version_N`` (one curve per run);
the checkpoint path does not depend on that version. ``--ckpt_path last`` is ``<checkpoints>/last.ckpt``.
``validate``, ``test`` and ``predict`` of a checkpoint log to ``<its run>/<command>/`` (``predictions.jsonl`` too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _get(tree: Any, key: str, default: Any = None) -> Any:
    if tree is None:
        return default
    getter = getattr(tree, "get", None)
    value = getter(key, default) if getter is not None else getattr(tree, key, default)
    return default if value is None else value


def checkpoint_callbacks(trainer_config: Any) -> list[Any]:
    """The ``ModelCheckpoint`` entries (class path ending in ``ModelCheckpoint``) of a trainer configuration."""
    callbacks = _get(trainer_config, "callbacks", [])
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    return [c for c in callbacks if str(_get(c, "class_path", "")).endswith("ModelCheckpoint")]


@dataclass(frozen=True)
class RunPaths:
    """The run folder of a configuration and the folder its checkpoints go to."""

    root: Path
    checkpoints: Path

    @classmethod
    def from_config(cls, section: Any) -> RunPaths:
        """From a subcommand's configuration (``trainer.default_root_dir``, a ``ModelCheckpoint``'s ``dirpath``)."""
        trainer = _get(section, "trainer")
        root = Path(_get(trainer, "default_root_dir", "."))
        dirpaths = [_get(_get(c, "init_args"), "dirpath") for c in checkpoint_callbacks(trainer)]
        dirpath = next((d for d in dirpaths if d), None)
        return cls(root, Path(dirpath) if dirpath else root / "checkpoints")

    @property
    def last(self) -> Path:
        """``<checkpoints>/last.ckpt``, what ``--ckpt_path last`` loads."""
        return self.checkpoints / "last.ckpt"


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder a checkpoint belongs to: above its ``checkpoints/`` folder, else the folder it is in."""
    path = Path(checkpoint)
    parent = path.parent
    return parent.parent if parent.name == "checkpoints" else parent
