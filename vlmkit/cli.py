"""The ``vlmkit`` command: LightningCLI over ``VLMModule`` and any ``LightningDataModule``.

``vlmkit fit|validate|test|predict --config recipes/....yaml``; any part is swapped
with a flag, e.g. ``--model.vlm.connector vlmkit.connectors.MLPProjection``.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from vlmkit.training.module import VLMModule

DESCRIPTION = (
    "vlmkit: build, train and evaluate vision-language models from swappable parts "
    "(vision encoder, connector, fusion, language model). Example: vlmkit fit --config recipes/quickstart.yaml"
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
    build_cli(args)


if __name__ == "__main__":
    main()
