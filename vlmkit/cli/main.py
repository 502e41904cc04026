"""The ``vlmkit`` console script: LightningCLI's subcommands plus vlmkit's own, registered here.

``fit``, ``validate``, ``test``, ``predict`` go to :func:`~vlmkit.cli.lightning_cli.build_cli`; ``data``, ``export``,
``export-idefics2``, ``export-idefics3``, ``report``, ``budget``, ``list``, ``ablate``, ``generate``, ``chat`` and
``eval`` to their own entry points, which this module imports when they run (the command line is the top of the import
graph: nothing below imports it). ``vlmkit``, ``vlmkit --help`` and the help of the commands that need no model import
neither torch nor Lightning. Errors in what the user gave (files, checkpoints, data, a misspelled option) print one
line, ``vlmkit: error: ...``, not a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from vlmkit.cli.quiet import quiet_third_party
from vlmkit.errors import UserInputError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _data(argv: list[str]) -> object:
    from vlmkit.data.build import main

    return main(argv)


def _export(argv: list[str]) -> object:
    from vlmkit.cli.export import main

    return main(argv)


def _export_idefics2(argv: list[str]) -> object:
    from vlmkit.cli.export_transformers import main

    return main(argv)


def _export_idefics3(argv: list[str]) -> object:
    from vlmkit.cli.export_transformers import main_idefics3

    return main_idefics3(argv)


def _ablate(argv: list[str]) -> object:
    from vlmkit.ablate.cli import main

    sys.exit(main(argv))


def _generate(argv: list[str]) -> object:
    from vlmkit.cli.generate import main

    return main(argv)


def _chat(argv: list[str]) -> object:
    from vlmkit.cli.generate import chat_main

    return chat_main(argv)


def _eval(argv: list[str]) -> object:
    from vlmkit.cli.eval import main

    return main(argv)


def _report(argv: list[str]) -> object:
    from vlmkit.cli.report import main

    return main(argv)


def _budget(argv: list[str]) -> object:
    from vlmkit.data.token_budget import main

    return main(argv, prog="vlmkit budget")


def _list(argv: list[str]) -> object:
    from vlmkit.cli.list_command import main

    return main(argv)


SUBCOMMANDS: dict[str, Callable[[list[str]], object]] = {
    "list": _list,
    "data": _data,
    "export": _export,
    "export-idefics2": _export_idefics2,
    "export-idefics3": _export_idefics3,
    "report": _report,
    "budget": _budget,
    "ablate": _ablate,
    "generate": _generate,
    "chat": _chat,
    "eval": _eval,
}
"""vlmkit's own subcommands (imported when used); everything else is LightningCLI's."""

COMMANDS: dict[str, str] = {
    "fit": "train a recipe: vlmkit fit --config recipes/quickstart.yaml (resume: --ckpt_path last)",
    "validate": "score a checkpoint on the validation data (teacher forcing, or generation with an eval recipe)",
    "test": "score a checkpoint on the test data",
    "predict": "answer the prediction data with a checkpoint; writes predictions.jsonl next to it",
    "generate": "answer a prompt about your own image(s) with a checkpoint or exported model",
    "chat": "talk with a model about images, with multi-turn history",
    "eval": "run lmms-eval tasks on a checkpoint (needs the lmms extra)",
    "list": "the recipes with their purpose, every part (encoders, connectors, fusions, LMs, data) with its arguments",
    "data": "build webdataset shards (vlmkit data build) or synthetic inputs (vlmkit data synth)",
    "report": "parameters and forward FLOPs per part of a recipe's model",
    "budget": "encoder patches and visual tokens an image costs (the token budget)",
    "export": "a checkpoint as merged safetensors, adapters only, or a save_pretrained folder (--format)",
    "export-idefics2": "a transformers Idefics2 checkpoint from a trained model",
    "export-idefics3": "a transformers Idefics3 / SmolVLM checkpoint from a trained model",
    "ablate": "rerun the paper's ablations at toy scale and report them beside its numbers",
}
"""One line per command for ``vlmkit --help``, in the order shown (``generate``, ``chat`` and ``eval`` are registered
where they are implemented)."""


def top_level_help() -> str:
    """The text of ``vlmkit --help``: every command with its one-line purpose."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: vlmkit <command> [options]   (vlmkit <command> --help for a command's options)",
        "",
        "vlmkit: build, train and evaluate vision-language models from swappable parts (vision encoder, connector, "
        "fusion, language model), as the Idefics2 paper studies them.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        "first run:  vlmkit fit --config recipes/quickstart.yaml   then   vlmkit list   to see what else there is",
    ]
    return "\n".join(lines)


def _one_line(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a dataloader worker, the worker's own last line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split("\n"))


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``vlmkit`` console script."""
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(top_level_help())
        return
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"vlmkit {version('vlmkit')}")
        return
    quiet_third_party()
    try:
        if argv[0] in SUBCOMMANDS:
            SUBCOMMANDS[argv[0]](argv[1:])
            return
        if argv[0] not in LIGHTNING_COMMANDS and not argv[0].startswith("-"):
            from vlmkit.cli.suggest import unknown_command

            raise unknown_command(argv[0], list(COMMANDS))
        from vlmkit.cli.recipe_files import check_configs

        check_configs(argv)  # files exist, the first is not a fragment: before torch is imported
        from vlmkit.cli.lightning_cli import build_cli

        build_cli(None if args is None else argv)  # None: LightningCLI reads sys.argv itself
    except UserInputError as err:
        sys.exit(f"vlmkit: error: {_one_line(err)}")


if __name__ == "__main__":
    main()
