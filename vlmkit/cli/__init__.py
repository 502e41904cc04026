"""The command line: ``vlmkit`` (LightningCLI's ``fit|validate|test|predict`` and vlmkit's own subcommands).

The top of the import graph: it imports the commands' modules, none of them imports it. Importing it (and running
``vlmkit --help``) does not import torch: the LightningCLI names below are loaded on first use.
"""

from importlib import import_module
from typing import Any

from vlmkit.cli.main import COMMANDS, SUBCOMMANDS, main

_LAZY = {name: "vlmkit.cli.lightning_cli" for name in ("DESCRIPTION", "ConfigMismatch", "VLMKitCLI", "build_cli")}
_LAZY["config_differences"] = "vlmkit.cli.lightning_cli"

__all__ = ["COMMANDS", "SUBCOMMANDS", "main", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlmkit.cli' has no attribute {name!r}")
