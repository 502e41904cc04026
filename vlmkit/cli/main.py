"""The ``vlmkit`` console script: LightningCLI's subcommands plus vlmkit's own, registered here.

``fit``, ``validate``, ``test``, ``predict`` go to :func:`~vlmkit.cli.lightning_cli.build_cli`; ``data``, ``export``,
``export-idefics2``, ``export-idefics3``, ``report``, ``ablate``, ``generate``, ``chat`` and ``eval`` to their own entry
points, which this module imports (the command line is the top of the import graph: nothing below imports it).
Errors in what the user gave (files, checkpoints, data) print one line, ``vlmkit: error: ...``, not a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from vlmkit.errors import UserInputError


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


SUBCOMMANDS: dict[str, Callable[[list[str]], object]] = {
    "data": _data,
    "export": _export,
    "export-idefics2": _export_idefics2,
    "export-idefics3": _export_idefics3,
    "report": _report,
    "ablate": _ablate,
    "generate": _generate,
    "chat": _chat,
    "eval": _eval,
}
"""vlmkit's own subcommands (imported when used); everything else is LightningCLI's."""


def _one_line(err: BaseException) -> str:
    """The message of ``err``; for an error re-raised from a dataloader worker, the worker's own last line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split("\n"))


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``vlmkit`` console script."""
    from vlmkit.cli.lightning_cli import build_cli

    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv[:1] and argv[0] in SUBCOMMANDS:
            SUBCOMMANDS[argv[0]](argv[1:])
        else:
            build_cli(args)  # None: LightningCLI reads sys.argv itself
    except UserInputError as err:
        sys.exit(f"vlmkit: error: {_one_line(err)}")


if __name__ == "__main__":
    main()
