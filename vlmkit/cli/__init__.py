"""The command line: ``vlmkit`` (LightningCLI's ``fit|validate|test|predict`` and vlmkit's own subcommands).

The top of the import graph: it imports the commands' modules, none of them imports it.
"""

from vlmkit.cli.lightning_cli import DESCRIPTION, ConfigMismatch, VLMKitCLI, build_cli, config_differences
from vlmkit.cli.main import SUBCOMMANDS, main

__all__ = ["DESCRIPTION", "SUBCOMMANDS", "ConfigMismatch", "VLMKitCLI", "build_cli", "config_differences", "main"]
