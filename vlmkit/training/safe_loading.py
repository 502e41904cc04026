"""Read checkpoints without running code from them; missing, empty and truncated files are named.

A PyTorch pickle can run any code while it loads. Every checkpoint vlmkit reads (``--ckpt_path``,
``init_from``, ``vlmkit export``, ``vlmkit export-idefics2``, the divergence guard's rollback, the lmms-eval
adapter) is read with ``torch.load(weights_only=True)``: tensors, containers, numbers, strings and torch's own
allow-list, plus optimizer and scheduler classes of ``torch.optim`` (old checkpoints of a ``VLMModule`` built in
Python name its optimizer class; naming a class runs nothing). A sharded folder (``torch.distributed.checkpoint``,
FSDP2) pickles its metadata: it is read by an unpickler that accepts only that format's own classes. A file that
needs more is refused with an :class:`~vlmkit.errors.UnsafeCheckpointError` that names what it references and the
opt-in of that load site; with the opt-in (for files you trust) it is unpickled in full, with a warning.
"""

from __future__ import annotations

import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import torch

from vlmkit.errors import CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError

T = TypeVar("T")

_DCP_METADATA = ".metadata"


def existing_checkpoint(path: str | Path, what: str = "checkpoint") -> Path:
    """``path`` as a ``Path`` after checking that it is a non-empty file or a folder.

    Raises:
        CheckpointNotFoundError: If nothing exists at ``path``.
        CheckpointError: If it is an empty file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{what} not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is an empty file (0 bytes): the run that wrote it was probably killed")
    return path


def optimizer_classes(path: str | Path) -> list[type]:
    """The ``torch.optim`` optimizer and scheduler classes a checkpoint file names (to allow them in ``weights_only``).

    Only modules that are already imported are looked at: nothing named in the file is imported.
    """
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint: the load reports it
        return []
    allowed = []
    for name in names:
        module, _, attr = name.rpartition(".")
        obj = getattr(sys.modules.get(module), attr, None) if module.startswith("torch.optim") else None
        bases = (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
        if isinstance(obj, type) and issubclass(obj, bases):
            allowed.append(obj)
    return allowed


def allow_optimizer_classes(path: str | Path) -> AbstractContextManager:
    """Context in which ``torch.load(weights_only=True)`` also accepts the optimizer classes ``path`` names."""
    return torch.serialization.safe_globals(optimizer_classes(path))


def _unsafe(path: Path, err: Exception, opt_in: str) -> UnsafeCheckpointError:
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path))) if path.is_file() else []
    except Exception:
        names = []
    what = f"it references {', '.join(names[:5])}" if names else str(err).strip().splitlines()[0][:200]
    return UnsafeCheckpointError(
        f"checkpoint {path} needs full unpickling, which can run arbitrary code ({what}); "
        f"it was not loaded. If you trust this file, {opt_in}"
    )


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    first = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:200]
    size = f"{path.stat().st_size:,} bytes" if path.is_file() else "a folder"
    return CheckpointError(
        f"cannot read checkpoint {path} ({size}): {type(err).__name__}: {first} "
        "(the file is truncated, or not a PyTorch checkpoint)"
    )


def guarded_load(
    path: str | Path, load: Callable[[bool], T], *, trust: bool, opt_in: str, what: str = "checkpoint"
) -> T:
    """Run ``load(weights_only)`` on a checkpoint safely, turning read errors into one-line errors naming the file.

    Args:
        path: The checkpoint file or sharded folder.
        load: Reads it, given ``weights_only``; only reading (not model building) should happen inside.
        trust: Unpickle in full (``weights_only=False``), with a warning: runs any code the file holds.
        opt_in: How to pass ``trust`` at this load site, for the error message (e.g. ``"pass --trust_checkpoint"``).
        what: What the file is, for messages (``"init_from checkpoint"``).

    Raises:
        CheckpointNotFoundError: Nothing at ``path``.
        UnsafeCheckpointError: The file needs full unpickling and ``trust`` is off.
        CheckpointError: The file is empty, truncated or not a checkpoint.
    """
    path = existing_checkpoint(path, what)
    if trust:
        warnings.warn(
            f"loading {what} {path} with full unpickling (trusted): any code in the file runs; "
            "only do this for files you made or trust",
            UserWarning,
            stacklevel=2,
        )
        return load(False)
    try:
        with allow_optimizer_classes(path) if path.is_file() else torch.serialization.safe_globals([]):
            return load(True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "references" in str(err):
            raise _unsafe(path, err, opt_in) from err
        raise _unreadable(path, err) from err
    except (EOFError, RuntimeError, KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise _unreadable(path, err) from err


def load_checkpoint(
    path: str | Path,
    *,
    trust: bool = False,
    opt_in: str = "pass trust=True",
    what: str = "checkpoint",
    mmap: bool = False,
    keys: set[str] | None = None,
) -> dict[str, Any]:
    """A Lightning checkpoint file or sharded folder as a dict, loaded without running code from it.

    Args:
        path: A ``.ckpt``/``.pt`` file, or a folder written by ``torch.distributed.checkpoint`` (FSDP2).
        trust: Unpickle in full instead (runs any code the file holds), with a warning.
        opt_in: How the user passes ``trust`` where this is called, for the error message.
        what: What the file is, for messages.
        mmap: Map a file's tensors instead of reading them (for weights that are copied right away).
        keys: For a sharded folder, read only these top-level entries (e.g. ``{"state_dict"}``).

    Raises:
        See :func:`guarded_load`.
    """
    path = existing_checkpoint(path, what)
    if path.is_dir():
        return guarded_load(path, lambda weights_only: read_sharded(path, keys, weights_only), trust=trust,
                            opt_in=opt_in, what=what)  # fmt: skip

    def read(weights_only: bool) -> dict[str, Any]:
        use_mmap = mmap and zipfile.is_zipfile(path)  # legacy (non-zip) files cannot be mapped
        return torch.load(path, map_location="cpu", mmap=use_mmap, weights_only=weights_only)

    checkpoint = guarded_load(path, read, trust=trust, opt_in=opt_in, what=what)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{what} {path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles the ``.metadata`` of a ``torch.distributed.checkpoint`` folder: only that format's own classes."""

    _ALLOWED = {
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.distributed.checkpoint.metadata" or (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"sharded checkpoint metadata references {module}.{name}")


def read_sharded(folder: Path, keys: set[str] | None = None, weights_only: bool = True) -> dict[str, Any]:
    """Read a ``torch.distributed.checkpoint`` folder into one (unsharded) dict on CPU.

    With ``weights_only`` the metadata goes through an allow-list of the format's classes and non-tensor entries
    through ``torch.load(weights_only=True)``; otherwise torch's own (pickle) reader is used. Lightning's
    ``meta.pt`` (step, loops, callbacks) is merged in when ``keys`` is ``None``.
    """
    from lightning.fabric.utilities.load import _METADATA_FILENAME
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    if not (folder / _DCP_METADATA).is_file():
        raise CheckpointError(f"{folder} is a folder without {_DCP_METADATA}: not a sharded checkpoint")

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any):
            if not weights_only:
                return super().read_metadata(*args, **kwargs)
            with open(folder / _DCP_METADATA, "rb") as file:
                metadata = _MetadataUnpickler(file).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class Planner(_EmptyStateDictLoadPlanner):
        def load_bytes(self, read_item, value) -> None:
            obj = torch.load(value, weights_only=weights_only)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    checkpoint: dict[str, Any] = {}
    try:
        _load_state_dict(checkpoint, storage_reader=Reader(folder), planner=Planner(keys=keys), no_dist=True)
    except CheckpointException as err:  # a BaseException holding each rank's error as text
        text = " ".join(str(failure) for failure, _ in err.failures.values())
        unsafe = re.search(r"metadata references ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", text)
        if unsafe:
            raise pickle.UnpicklingError(f"the sharded checkpoint references {unsafe[1] or unsafe[2]}") from None
        raise RuntimeError(f"reading the sharded checkpoint failed: {text.strip().splitlines()[0][:300]}") from None
    extra = folder / _METADATA_FILENAME
    if keys is None and extra.is_file():
        checkpoint.update(torch.load(extra, map_location="cpu", weights_only=weights_only))
    return checkpoint


def verify_sharded(folder: Path) -> None:
    """Check that a sharded folder loads without full unpickling (metadata, non-tensor entries, ``meta.pt``).

    Tensors are not read. Lets a strategy that loads the folder in place (FSDP2) do so after the check.

    Raises:
        pickle.UnpicklingError: Naming what the folder references beyond the format's classes.
    """
    from lightning.fabric.utilities.load import _METADATA_FILENAME
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    if not (folder / _DCP_METADATA).is_file():
        raise CheckpointError(f"{folder} is a folder without {_DCP_METADATA}: not a sharded checkpoint")
    with open(folder / _DCP_METADATA, "rb") as file:
        metadata = _MetadataUnpickler(file).load()
    entries = {k for k, v in metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)}
    if entries:
        read_sharded(folder, entries, weights_only=True)
    if (folder / _METADATA_FILENAME).is_file():
        torch.load(folder / _METADATA_FILENAME, map_location="cpu", weights_only=True)
