"""The ``vlmkit`` command: LightningCLI over ``VLMModule`` and any ``LightningDataModule``.

``vlmkit fit|validate|test|predict --config recipes/....yaml``; any part is swapped
with a flag, e.g. ``--model.vlm.connector vlmkit.connectors.MLPProjection``.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from vlmkit.training.module import VLMModule

DESCRIPTION = (
    "vlmkit: build, train and evaluate vision-language models from swappable parts "
    "(vision encoder, connector, fusion, language model). Example: vlmkit fit --config recipes/quickstart.yaml. "
    "Also: `vlmkit data synth|build` (webdataset shards), `vlmkit export` (merged weights or adapters), "
    "`vlmkit export-idefics2` (a transformers Idefics2 checkpoint), `vlmkit ablate` (the paper's ablations at toy "
    "scale); each has its own --help."
)


def build_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parse ``args`` (default: ``sys.argv``), build model, data and trainer, and run the subcommand."""
    return LightningCLI(
        VLMModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"description": DESCRIPTION},
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``vlmkit`` console script."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["data"]:
        from vlmkit.data.build import main as data_main

        data_main(argv[1:])
        return
    if argv[:1] == ["export"]:
        from vlmkit.export import main as export_main

        export_main(argv[1:])
        return
    if argv[:1] == ["ablate"]:
        from vlmkit.ablate.cli import main as ablate_main

        sys.exit(ablate_main(argv[1:]))
    if argv[:1] == ["export-idefics2"]:
        from vlmkit.interop.cli import main as export_idefics2_main

        export_idefics2_main(argv[1:])
        return
    build_cli(args)  # None: LightningCLI reads sys.argv itself


if __name__ == "__main__":
    main()
