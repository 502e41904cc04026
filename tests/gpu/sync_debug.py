"""Where code waits for the GPU: ``torch.cuda.set_sync_debug_mode("warn")`` with each warning traced to its caller.

Shared by ``tests/gpu/test_sync_audit.py`` and ``benchmarks/gpu_smoke.py``. A synchronising call is attributed to the
innermost frame outside torch (vlmkit's own code, or a library it calls such as transformers).
"""

from __future__ import annotations

import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

SYNC_MESSAGE = "synchroniz"  # "called a synchronizing CUDA operation"


def sync_sites(fn: Callable[[], object]) -> Counter:
    """Run ``fn`` and count its device synchronisations by call site (``"vlmkit/model.py:223"``)."""
    sites: Counter = Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        if SYNC_MESSAGE not in str(message):
            return
        stack = traceback.extract_stack()[:-1]
        frames = [f for f in stack if "/torch/" not in f.filename and not f.filename.endswith("warnings.py")]
        caller = frames[-1] if frames else None
        sites[_short(caller.filename) + f":{caller.lineno}" if caller else f"{filename}:{lineno}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sites


def vlmkit_sites(sites: Counter) -> Counter:
    """Only the synchronisations made by vlmkit's own code."""
    return Counter({site: n for site, n in sites.items() if site.startswith("vlmkit/")})


def _short(filename: str) -> str:
    path = Path(filename)
    for anchor in ("vlmkit", "transformers", "peft", "lightning", "bitsandbytes", "tests", "benchmarks"):
        if anchor in path.parts:
            return "/".join(path.parts[len(path.parts) - 1 - path.parts[::-1].index(anchor) :])
    return filename
