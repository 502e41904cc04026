"""``vlmkit fit|validate|test|predict``: LightningCLI over ``VLMModule`` and any ``LightningDataModule``.

``vlmkit fit|validate|test|predict --config recipes/....yaml``; any part is swapped
with a flag, e.g. ``--model.vlm.connector vlmkit.connectors.MLPProjection``.

With ``--ckpt_path``, the checkpoint is read without running code from it (``--weights_only false`` opts out)
and the model configuration saved in it is compared with the one given: the checkpoint fills in what was not
given, and where the given model (``model.vlm``) differs from the checkpoint's, the command stops and names the
keys unless ``--config_mismatch`` says which one to use (LightningCLI alone silently uses the checkpoint's).
Errors in what the user gave (files, checkpoints, data) print one line, ``vlmkit: error: ...``, not a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Literal, NoReturn

from jsonargparse._common import debug_mode_active
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from vlmkit.cli.parse_errors import one_line_parse_error
from vlmkit.cli.run_paths import RunPaths, checkpoint_callbacks, run_folder
from vlmkit.cli.slot_help import install_slot_help
from vlmkit.errors import CheckpointError
from vlmkit.training.generation_samples import GenerationSamples
from vlmkit.training.grad_norms import PartGradNorms
from vlmkit.training.loss_spikes import LossSpikeMarkers
from vlmkit.training.module import VLMModule

DESCRIPTION = (
    "vlmkit: build, train and evaluate vision-language models from swappable parts "
    "(vision encoder, connector, fusion, language model). Example: vlmkit fit --config recipes/quickstart.yaml. "
    "`vlmkit --help` lists every command (list, data, report, budget, export, generate, chat, eval, ablate, ...); "
    "`vlmkit list` every recipe and part."
)

ConfigMismatch = Literal["error", "use_checkpoint", "use_command_line"]
"""When the model given differs from the checkpoint's: stop, run the checkpoint's model, or build the given one."""

_MISSING = object()


def _flatten(value: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """``{path: leaf}`` of nested dicts; a ``class_path`` entry is kept as a leaf next to its ``init_args``."""
    if isinstance(value, dict) and value:
        flat: dict[tuple[str, ...], Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, (*prefix, str(key))))
        return flat
    return {prefix: value}


def _plain(value: Any) -> Any:
    """JSON-comparable form (tuples become lists, namespaces dicts)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    return json.loads(json.dumps(value, default=str))


def _flag(path: tuple[str, ...]) -> str:
    """``model.vlm.connector`` for ``("model", "vlm", "init_args", "connector", "class_path")``."""
    return ".".join(p for p in path if p not in ("init_args", "class_path"))


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return _MISSING
        tree = tree[key]
    return tree


def config_differences(saved: dict, given: dict, defaults: dict) -> list[tuple[tuple[str, ...], Any, Any]]:
    """Keys where the given model configuration differs from the checkpoint's, counting only what was given.

    A value equal to the parser's default (or under a default of ``None``, e.g. no ``vlm`` at all) was not given:
    the checkpoint fills it in. A part whose class differs is one difference (its ``class_path``), not one per
    argument. Inside free-form dicts (e.g. a transformers ``config``) a key only one side has is a difference too;
    a constructor argument the checkpoint does not know (added later, at its default) is not.

    Returns:
        ``[(path, checkpoint value, given value)]`` with paths into ``saved``; a part whose class differs has the
        part's path and the two class paths; a value absent on one side is ``None``.
    """
    saved, given, defaults = _plain(saved), _plain(given), _plain(defaults)
    flat_saved, flat_given, flat_defaults = _flatten(saved), _flatten(given), _flatten(defaults)

    def in_free_dict(path: tuple[str, ...]) -> bool:
        return len(path) > 1 and path[-2] != "init_args" and isinstance(_get(saved, path[:-1]), dict)

    extra = {path: _MISSING for path in flat_given if path not in flat_saved and in_free_dict(path)}
    differences, replaced = [], []
    for path, value in sorted({**flat_saved, **extra}.items(), key=lambda item: (len(item[0]), item[0])):
        if any(path[: len(p)] == p for p in replaced):
            continue
        mine = _get(given, path)
        if mine is _MISSING or mine == value:
            continue
        default = next((flat_defaults[path[:n]] for n in range(len(path), 0, -1) if path[:n] in flat_defaults), None)
        if mine == default or (default is None and mine is None):
            continue
        if path[-1] == "class_path":
            replaced.append(path[:-1])
            differences.append((path[:-1], value, mine))
        else:
            differences.append((path, None if value is _MISSING else value, mine))
    return differences


def _describe(differences: list[tuple[tuple[str, ...], Any, Any]], limit: int = 5) -> str:
    def short(value: Any) -> str:
        value = value.get("class_path", value) if isinstance(value, dict) else value
        return json.dumps(value)[:80] if not isinstance(value, str) else value[:80]

    parts = [f"model.{_flag(p)} is {short(new)} here but {short(old)} in the checkpoint" for p, old, new in differences]
    more = f" (+{len(parts) - limit} more)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more


class VLMKitParser(LightningArgumentParser):
    """The parser of ``vlmkit``: an error in the arguments is one line, not the usage.

    It names the option, its close matches and the valid names (:func:`~vlmkit.cli.parse_errors.one_line_parse_error`).
    """

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Print ``vlmkit: error: <one line>`` and exit with status 2 (where jsonargparse would exit)."""
        if not self.exit_on_error or debug_mode_active():
            super().error(message, ex)  # raises, as jsonargparse does (nested parsers try alternatives this way)
        parser = getattr(ex, "subcommand_parser", None) or self
        sys.stderr.write(f"vlmkit: error: {one_line_parse_error(message, parser)}\n")
        sys.exit(2)


DEFAULT_CALLBACKS = (PartGradNorms, LossSpikeMarkers, GenerationSamples)
"""What ``vlmkit fit`` adds to every run unless ``--training_logs false`` (a recipe may configure them itself)."""


class VLMKitCLI(LightningCLI):
    """``LightningCLI`` that reads ``--ckpt_path`` safely and never lets the checkpoint's model silently win.

    Also (see :mod:`vlmkit.cli.run_paths`): checkpoints in ``<run>/checkpoints/`` whatever the logger's version, a
    rerun replacing ``last.ckpt`` instead of writing ``last-v1.ckpt``, ``--ckpt_path last`` resolved there (a missing
    one is an error), ``validate``/``test``/``predict`` logging next to the checkpoint they evaluate, and one line at
    the end of ``fit`` naming the checkpoint and the logs. ``fit`` logs gradient norms per part, loss spikes and a few
    generated answers to TensorBoard (``--training_logs``); vlmkit's per-part table replaces Lightning's summary.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install_slot_help()
        kwargs.setdefault("parser_class", VLMKitParser)
        trainer_defaults = {"enable_model_summary": False, **kwargs.pop("trainer_defaults", {})}
        super().__init__(*args, trainer_defaults=trainer_defaults, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``--config_mismatch`` and ``--training_logs``; give the model the evaluator its data brings."""
        parser.link_arguments("data", "model.evaluator", compute_fn=data_evaluator, apply_on="instantiate")
        parser.add_argument(
            "--training_logs",
            type=bool,
            default=True,
            help="fit logs the gradient norm of each part (grad_norm/*), loss spikes (train/loss_spike) and a few "
            "generated answers with their images at each validation (samples/*) to TensorBoard "
            "(vlmkit.training.PartGradNorms, LossSpikeMarkers, GenerationSamples); false: none of them",
        )
        parser.add_argument(
            "--config_mismatch",
            type=ConfigMismatch,
            default="error",
            help="With --ckpt_path, when the model given (model.vlm) differs from the one saved in the checkpoint: "
            "'error' stops and names the keys, 'use_checkpoint' runs the checkpoint's model, 'use_command_line' "
            "builds the model given here (the checkpoint's weights must fit it). Keys that were not given always "
            "come from the checkpoint; other model keys given here (e.g. max_new_tokens) are used, and named.",
        )

    def _parse_ckpt_path(self) -> None:
        """Read the checkpoint safely, compare its model configuration with the given one, and merge."""
        from vlmkit.training.safe_loading import existing_checkpoint, guarded_load, load_checkpoint, verify_sharded

        subcommand = self.config.get("subcommand")
        section = self.config[subcommand] if subcommand else None
        init_from = section.get("model", {}).get("init_from") if section is not None else None
        if init_from:  # checked before the (possibly large) model is built; loaded when training starts
            existing_checkpoint(init_from, "--model.init_from checkpoint")
        ckpt_path = section.get("ckpt_path") if section is not None else None
        if ckpt_path == "last":
            ckpt_path = section["ckpt_path"] = str(self._last_checkpoint(subcommand, section))
        if not ckpt_path or ckpt_path in ("best", "hpc", "registry") or "://" in str(ckpt_path):
            return  # Lightning's own names, and remote files: Lightning reads them
        path = existing_checkpoint(ckpt_path, "--ckpt_path checkpoint")
        trust = section.get("weights_only") is False
        opt_in = "pass --weights_only false"
        what = "--ckpt_path checkpoint"
        if path.is_dir():  # sharded (FSDP2): Lightning reads it with torch's pickle reader, so check it first
            check = lambda safe: verify_sharded(path) if safe else None  # noqa: E731
            guarded_load(path, check, trust=trust, opt_in=opt_in, what=what)
            meta = path / "meta.pt"  # Lightning's file of everything but weights and optimizer states
            checkpoint = load_checkpoint(meta, trust=trust, opt_in=opt_in, what=what) if meta.is_file() else {}
        else:
            checkpoint = load_checkpoint(path, trust=trust, opt_in=opt_in, what=what, mmap=True)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        given = section["model"]
        defaults = self._subcommand_parsers[subcommand].get_defaults().get("model")
        differences = config_differences(hparams, given, defaults)
        mode = section.get("config_mismatch", "error")
        merged = _plain(hparams)
        if differences and mode != "use_checkpoint":
            in_model = [d for d in differences if d[0][0] == "vlm"]
            if in_model and mode == "error":
                raise CheckpointError(
                    f"the model given differs from the one {path} was trained with: {_describe(in_model)}. "
                    "Pass --config_mismatch use_checkpoint to run the checkpoint's model, or --config_mismatch "
                    "use_command_line to build the model given here (its weights must then fit)"
                )
            plain_given = _plain(given)
            for key, _, _ in differences:
                _set(merged, key, _get(plain_given, key))
            rank_zero_warn(f"--ckpt_path {path}: using the values given here: {_describe(differences)}")
        elif differences:
            rank_zero_warn(f"--ckpt_path {path}: using the checkpoint's model configuration: {_describe(differences)}")
        try:
            self.config = self.parser.parse_object({subcommand: {"model": merged}}, self.config)
        except SystemExit:
            sys.stderr.write(f"vlmkit: error: the model configuration saved in {path} does not parse\n")
            raise

    @staticmethod
    def _last_checkpoint(subcommand: str, section: Any) -> Any:
        """``<run>/checkpoints/last.ckpt`` of the configuration; an error naming it when it does not exist."""
        from vlmkit.errors import CheckpointNotFoundError

        paths = RunPaths.from_config(section)
        if not paths.last.exists():
            fresh = "run `vlmkit fit` without --ckpt_path to start a run" if subcommand == "fit" else "train it first"
            raise CheckpointNotFoundError(
                f"--ckpt_path last: no checkpoint {paths.last} (the run folder is trainer.default_root_dir="
                f"{paths.root}); {fresh}"
            )
        return paths.last

    def _section(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The trainer, with vlmkit's run paths and (for ``fit``) its training logs."""
        section = self._section()
        paths = RunPaths.from_config(section)
        ckpt_path = section.get("ckpt_path")
        logger = section.get("trainer", {}).get("logger")
        if self.subcommand in ("validate", "test", "predict") and ckpt_path and logger in (None, True):
            from lightning.pytorch.loggers import TensorBoardLogger

            kwargs.setdefault(
                "logger", TensorBoardLogger(save_dir=run_folder(ckpt_path), name="", version=self.subcommand)
            )
        extra = [self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys]
        if self.subcommand == "fit" and section.get("training_logs", True):
            configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
            configured = configured if isinstance(configured, list) else [configured]
            extra += [cls() for cls in DEFAULT_CALLBACKS if not any(isinstance(c, cls) for c in configured)]
        trainer = self._instantiate_trainer({**self._get(self.config_init, "trainer", default={}), **kwargs}, extra)
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            if callback.dirpath is None:
                callback.dirpath = os.path.realpath(paths.checkpoints)
                if not checkpoint_callbacks(section.get("trainer")):  # Lightning's default one: keep the last
                    callback.save_last = True
            callback._enable_version_counter = False  # a rerun replaces last.ckpt, never writes last-v1.ckpt
        self.run_paths = paths
        return trainer

    def before_fit(self) -> None:
        """Say whether this run resumes or replaces the checkpoints an earlier run left in its folder."""
        ckpt_path = self._section().get("ckpt_path")
        last = self.run_paths.last
        if not ckpt_path and last.exists() and self.trainer.is_global_zero:
            print(
                f"vlmkit: {self.run_paths.checkpoints} holds an earlier run's checkpoints: this run starts from the "
                "recipe's weights and replaces them (--ckpt_path last resumes instead)",
                flush=True,
            )

    def after_fit(self) -> None:
        """One line: where the checkpoint and the logs are."""
        if not self.trainer.is_global_zero:
            return
        callback = self.trainer.checkpoint_callback
        saved = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        where = f"checkpoint {_show(saved)} (step {self.trainer.global_step})" if saved else "no checkpoint"
        logs = self.trainer.log_dir
        log_text = f"; logs {_show(logs)} (tensorboard --logdir {_show(self.run_paths.root)})"
        print(f"vlmkit: {where}{log_text if logs else ''}", flush=True)


def _show(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith("..") else relative


def data_evaluator(data: Any) -> Any:
    """The evaluator a data module brings (``EvaluationDataModule``, ``TrainWithEvaluation``), else ``None``."""
    return getattr(data, "evaluator", None)


def build_cli(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Parse ``args`` (default: ``sys.argv``), build model, data and trainer, and run the subcommand."""
    return VLMKitCLI(
        VLMModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={"description": DESCRIPTION},
        args=args,
        run=run,
    )
