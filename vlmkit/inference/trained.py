"""One loader for every form a trained vlmkit model takes, with the image settings it was trained with.

``load_trained(path)`` accepts a Lightning checkpoint of ``vlmkit fit`` (the composition saved in its hyperparameters
rebuilds the model, the weights are read without running code from the file), a ``save_pretrained`` folder, a
``vlmkit export`` folder (its ``recipe.yaml`` rebuilds the model: merged weights load into it composed without
adapters, adapters-only weights onto the recipe's base) and a transformers Idefics2 / Idefics3 (SmolVLM) folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.errors import CheckpointError, CheckpointNotFoundError, UserInputError
from vlmkit.model import VisionLanguageModel
from vlmkit.model.pretrained import CONFIG_FILE, build_from_config, from_pretrained, load_weights_strictly

PROCESSOR_KEYS = ("max_image_size", "min_image_size", "resize_mode")
"""Image settings of a data module (its hyperparameters) that the processor of a trained model takes over."""

ACCEPTED = (
    "a Lightning .ckpt of `vlmkit fit`, a folder written by save_pretrained or `vlmkit export`, or a transformers "
    "Idefics2/Idefics3/SmolVLM folder (config.json + model.safetensors)"
)


@dataclass
class TrainedModel:
    """A loaded model and what is known of how it was trained.

    Attributes:
        vlm: The model, in eval mode.
        processor: Image settings for its processor (``max_image_size``, ``min_image_size``, ``split_images``,
            ``resize_mode``): those of its training data or checkpoint; empty when unknown.
        kind: ``"lightning"``, ``"pretrained"``, ``"export"``, ``"idefics2"`` or ``"idefics3"``.
        recipe: The training recipe, when the source holds it.
        metrics: Metrics known from the source.
    """

    vlm: VisionLanguageModel
    processor: dict[str, Any] = field(default_factory=dict)
    kind: str = ""
    recipe: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def load_trained(path: str | Path, trust_checkpoint: bool = False) -> TrainedModel:
    """Load a trained model from any of its forms (see the module docstring).

    Args:
        path: The checkpoint file or folder.
        trust_checkpoint: Unpickle a Lightning checkpoint in full (runs any code it holds), with a warning.

    Raises:
        UserInputError: If nothing is at ``path``, or it is none of the accepted forms (named).
        CheckpointError: A Lightning checkpoint that is truncated, unsafe or holds no composition.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path} (expected {ACCEPTED})")
    if path.is_file() or (path / ".metadata").is_file():
        return _lightning(path, trust_checkpoint)
    try:
        return _folder(path)
    except UserInputError:
        raise
    except (ValueError, FileNotFoundError, KeyError) as err:  # weights that do not fit, a file missing: one line
        raise CheckpointError(f"cannot load {path}: {err}") from err


def _folder(path: Path) -> TrainedModel:
    if (path / CONFIG_FILE).is_file():
        saved = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        vlm = from_pretrained(path)
        return TrainedModel(vlm.eval(), saved.get("processor", {}), "pretrained", None, saved.get("metrics", {}))
    if (path / "export.json").is_file():
        return _export(path)
    if (path / "config.json").is_file():
        return _transformers(path)
    raise UserInputError(f"{path} is a folder vlmkit cannot load: expected {ACCEPTED}")


def _lightning(path: Path, trust: bool) -> TrainedModel:
    from vlmkit.training.checkpoints import load_model_weights
    from vlmkit.training.safe_loading import load_checkpoint

    opt_in = "pass --trust_checkpoint (trust_checkpoint=True)"
    meta = path / "meta.pt" if path.is_dir() else path  # a sharded folder keeps its hyperparameters in meta.pt
    checkpoint = load_checkpoint(meta, trust=trust, opt_in=opt_in, mmap=True) if meta.is_file() else {}
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    config = hparams.get("vlm")
    if not isinstance(config, dict) or "class_path" not in config:
        raise CheckpointError(
            f"checkpoint {path} holds no model composition (its VLMModule was built in Python, not by `vlmkit fit`): "
            "rebuild it with its recipe, `vlmkit export --config <recipe> --ckpt_path ...`"
        )
    vlm = build_from_config(config)
    load_model_weights(vlm, path, trust=trust, opt_in=opt_in)
    data = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    data = data.get("init_args", data) if "class_path" in data else data
    recipe = {"model": {k: v for k, v in hparams.items() if not k.startswith("_")}}
    if data:
        recipe["data"] = {k: v for k, v in data.items() if k != "_instantiator"}
    return TrainedModel(vlm.eval(), _processor_settings(data), "lightning", recipe)


def _export(path: Path) -> TrainedModel:
    import yaml

    from vlmkit.adapters import load_trainable

    summary = json.loads((path / "export.json").read_text(encoding="utf-8"))
    recipe_file = path / "recipe.yaml"
    if not recipe_file.is_file():
        raise UserInputError(f"{path} holds an export without its recipe.yaml: rebuild it with `vlmkit export`")
    recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) or {}
    config = ((recipe.get("model") or {}).get("vlm")) or {}
    if summary.get("kind") == "trainable":
        vlm = build_from_config(config)
        load_trainable(vlm, path / "trainable.safetensors")
    else:  # merged plain weights: the recipe composed without adapters and without quantization
        vlm = build_from_config(without_adapters(config))
        load_weights_strictly(vlm, path / "model.safetensors")
    data = (recipe.get("data") or {}).get("init_args") or {}
    return TrainedModel(vlm.eval(), _processor_settings(data), "export", recipe)


def without_adapters(config: dict[str, Any]) -> dict[str, Any]:
    """The composition of a merged export: adapted parts become plain ones, quantization is dropped.

    Adapters merged into their base weights leave plain layers. The language model is composed ``"full"``: frozen,
    it would get trainable rows for the image tokens that the merged weights do not hold (they are merged in).
    """
    config = json.loads(json.dumps(config))
    init_args = config.setdefault("init_args", {})
    init_args["train_language_model"] = "full"
    for key in ("train_vision_encoder", "train_fusion"):
        if init_args.get(key) not in (None, "full", "frozen"):  # lora, dora, a LoRA(...)
            init_args[key] = "frozen"
    for part in ("vision_encoder", "language_model"):
        spec = init_args.get(part)
        if isinstance(spec, dict) and isinstance(spec.get("init_args"), dict) and "quantization" in spec["init_args"]:
            spec["init_args"]["quantization"] = None
    return config


def _transformers(path: Path) -> TrainedModel:
    from vlmkit.interop import (
        Idefics2ProcessorSettings,
        Idefics3ProcessorSettings,
        import_idefics2,
        import_idefics3,
    )

    model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type == "idefics2":
        settings = Idefics2ProcessorSettings.from_pretrained(str(path))
        processor = {"max_image_size": settings.max_image_size, "min_image_size": settings.min_image_size,
                     "split_images": settings.split_images}  # fmt: skip
        return TrainedModel(import_idefics2(str(path)).eval(), processor, "idefics2")
    if model_type in ("idefics3", "smolvlm"):
        settings3 = Idefics3ProcessorSettings.from_pretrained(str(path))
        processor = {"max_image_size": settings3.max_image_size, "split_images": settings3.split_images}
        return TrainedModel(import_idefics3(str(path)).eval(), processor, "idefics3")
    raise UserInputError(
        f"{path}/config.json is a {model_type!r} model; vlmkit loads idefics2, idefics3 and smolvlm folders"
    )


def _processor_settings(data: dict[str, Any]) -> dict[str, Any]:
    settings = {k: data[k] for k in PROCESSOR_KEYS if data.get(k) is not None}
    if data.get("eval_image_splitting") is not None:
        settings["split_images"] = bool(data["eval_image_splitting"])
    return settings
