"""Save and load a composed ``VisionLanguageModel`` like a transformers model: ``save_pretrained``/``from_pretrained``.

A saved folder holds what rebuilds the model without its training recipe: ``vlmkit_config.json`` (the composition as
jsonargparse ``class_path``/``init_args``, the same form a recipe's ``model.vlm`` has, so any part importable by its
class path works, vlmkit's or a third party's), ``model.safetensors`` (every weight; a tied head is stored once),
``tokenizer/`` (the tokenizer with its image tokens), the processor settings the model was trained with, and a
``README.md`` model card (parameters per part, the recipe and metrics when known). Loading reads safetensors only
(no pickle, no code from the folder) and strictly: a missing, unexpected or misshapen tensor is an error naming it.
Adapters (LoRA/DoRA, trainable token rows) are saved as they are, with the base weights: the composition rebuilds the
same adapters, so the loaded model computes exactly what was saved and can train on; ``vlmkit export`` writes merged
plain weights instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vlmkit.model.vision_language_model import VisionLanguageModel

CONFIG_FILE = "vlmkit_config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
MODEL_CARD = "README.md"
FORMAT_VERSION = 1
PARTS = ("vision_encoder", "connector", "fusion", "language_model")


def build_from_config(config: dict[str, Any]) -> VisionLanguageModel:
    """Build a model from its composition, ``{"class_path": ..., "init_args": {...}}`` (a recipe's ``model.vlm``).

    The parts are instantiated as LightningCLI does (jsonargparse): any class path works, a connector is given
    without its dims. The model remembers the composition (``vlm.config``), so it can be saved with
    :func:`save_pretrained`.

    Raises:
        ValueError: If the composition does not parse (the message names the key).
    """
    from jsonargparse import ArgumentParser

    from vlmkit.model.vision_language_model import VisionLanguageModel

    if not isinstance(config, dict) or "class_path" not in config:
        raise ValueError(f"a model composition is a dict with 'class_path' and 'init_args', got {str(config)[:200]}")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(VisionLanguageModel, "vlm", required=True)
    try:
        namespace = parser.parse_object({"vlm": config})
    except Exception as err:  # jsonargparse's ArgumentError: name the key it rejects
        raise ValueError(f"the model composition does not parse: {' '.join(str(err).split())[:500]}") from err
    vlm = parser.instantiate(namespace).vlm
    try:  # the full composition, defaults resolved: reproducible even if a default changes later
        vlm.config = json.loads(parser.dump(namespace, format="json", skip_check=True))["vlm"]
    except Exception:  # a value jsonargparse cannot serialise: keep the composition as given
        vlm.config = json.loads(json.dumps(config, default=str))
    return vlm


def save_pretrained(
    vlm: VisionLanguageModel,
    save_directory: str | os.PathLike,
    processor: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``vlm`` to ``save_directory`` so that :func:`from_pretrained` rebuilds it without the recipe.

    Args:
        vlm: The model; its composition is ``config`` or ``vlm.config`` (set when built from a recipe,
            :func:`build_from_config` or a checkpoint).
        save_directory: Created if missing; files of an earlier save are overwritten.
        processor: Image settings to process inputs with (``max_image_size``, ``min_image_size``,
            ``split_images``, ``resize_mode``), e.g. those of the training data.
        recipe: The training recipe (a LightningCLI config), for the model card.
        metrics: Final metrics (e.g. ``{"val/accuracy": 0.97}``), for the model card.
        config: The composition, when ``vlm`` was composed in Python (see :func:`build_from_config`).

    Returns:
        The folder.

    Raises:
        ValueError: If the composition is unknown (a model composed in Python without ``config``).
    """
    from safetensors.torch import save_model

    config = config if config is not None else getattr(vlm, "config", None)
    if not isinstance(config, dict) or "class_path" not in config:
        raise ValueError(
            "save_pretrained needs the model's composition ({'class_path': ..., 'init_args': ...}, as in a recipe's "
            "model.vlm): build the model with VisionLanguageModel.from_config(...) or pass config=..."
        )
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(vlm, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "vlmkit_format": str(FORMAT_VERSION)})
    vlm.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    saved = {"format_version": FORMAT_VERSION, "model": config, "processor": dict(processor or {})}
    if metrics:
        saved["metrics"] = {k: float(v) for k, v in metrics.items()}
    (folder / CONFIG_FILE).write_text(json.dumps(saved, indent=2, default=str) + "\n", encoding="utf-8")
    (folder / MODEL_CARD).write_text(model_card(vlm, config, processor, recipe, metrics), encoding="utf-8")
    return folder


def read_pretrained_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``vlmkit_config.json`` of a :func:`save_pretrained` folder.

    Raises:
        FileNotFoundError: If the folder or its config file is missing (named).
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a vlmkit save_pretrained folder: {path} not found")
    return json.loads(path.read_text(encoding="utf-8"))


def from_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> VisionLanguageModel:
    """Rebuild a model written by :func:`save_pretrained`: compose it from its config, then load its weights.

    The language model's ``tokenizer`` argument (when it has one) is pointed at the saved tokenizer, so nothing is
    fetched. Weights are read from safetensors only, and strictly.

    Raises:
        FileNotFoundError: If the folder, its config or its weights are missing.
        ValueError: If the weights and the composed model differ: every missing, unexpected and misshapen tensor named.
    """
    folder = Path(directory)
    saved = read_pretrained_config(folder)
    config = json.loads(json.dumps(saved["model"]))
    tokenizer_dir = folder / TOKENIZER_DIR
    lm = config.get("init_args", {}).get("language_model")
    if isinstance(lm, dict) and "tokenizer" in lm.get("init_args", {}) and tokenizer_dir.is_dir():
        lm["init_args"]["tokenizer"] = str(tokenizer_dir)
    vlm = build_from_config(config)
    vlm.config = saved["model"]  # as saved, not with this machine's tokenizer path
    load_weights_strictly(vlm, folder / WEIGHTS_FILE)
    return vlm.to(device)


def load_weights_strictly(vlm: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a safetensors file into ``vlm``; every tensor must match (a tied weight stored once counts for both).

    Raises:
        FileNotFoundError: If ``path`` is missing.
        ValueError: Naming the missing, unexpected and misshapen tensors.
    """
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights not found: {path}")
    own = vlm.state_dict()
    with safe_open(str(path), framework="pt") as file:
        shapes = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118
    wrong = [
        f"{k} {shapes[k]} vs model {tuple(own[k].shape)}" for k in shapes if k in own and shapes[k] != own[k].shape
    ]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} tensors have another shape than the model's: {_preview(wrong)}")
    missing, unexpected = load_model(vlm, str(path), strict=False)
    if missing or unexpected:
        parts = [f"missing from the file: {_preview(missing)}" if missing else "",
                 f"not in the model: {_preview(unexpected)}" if unexpected else ""]  # fmt: skip
        raise ValueError(f"{path} does not fit the composed model; " + "; ".join(p for p in parts if p))


def push_to_hub(
    vlm: VisionLanguageModel,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload vlmkit model",
    **save_kwargs: Any,
) -> Any:
    """Save ``vlm`` (:func:`save_pretrained`) to a temporary folder and upload it to the Hugging Face Hub.

    Needs network and ``huggingface_hub``; the repository is created if missing.

    Returns:
        What ``HfApi.upload_folder`` returns (the commit).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(vlm, folder, **save_kwargs)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)


def model_card(
    vlm: VisionLanguageModel,
    config: dict[str, Any],
    processor: dict[str, Any] | None,
    recipe: dict[str, Any] | None,
    metrics: dict[str, float] | None,
) -> str:
    """A README.md for the saved model: its parts and parameters, how to load it, the recipe and metrics if known."""
    from vlmkit.trainability import parameter_table

    init_args = config.get("init_args", {})
    rows = ["| part | class | parameters | trainable |", "|---|---|---:|---:|"]
    for line, part in zip(parameter_table(vlm, PARTS).splitlines()[1:], (*PARTS, "total")):
        _, total, trainable = line.rsplit(maxsplit=2)
        spec = init_args.get(part)
        name = spec.get("class_path", "") if isinstance(spec, dict) else type(getattr(vlm, part, vlm)).__name__
        rows.append(f"| {part} | {f'`{name}`' if part != 'total' else ''} | {total} | {trainable} |")
    sections = [
        "---\nlibrary_name: vlmkit\ntags:\n- vision-language-model\n- vlmkit\n---\n",
        "# vlmkit vision-language model\n",
        "Composed with vlmkit (vision encoder -> connector -> fusion -> language model). "
        "Training settings per part: "
        + ", ".join(f"{k}={init_args[k]}" for k in ("train_vision_encoder", "train_language_model") if k in init_args)
        + ".\n",
        "## Parts\n\n" + "\n".join(rows) + "\n",
        "## Use\n\n```python\nfrom vlmkit.model import VisionLanguageModel\n"
        'vlm = VisionLanguageModel.from_pretrained("<this folder>")\n\n'
        "from vlmkit.inference import VLMPipeline\n"
        'pipe = VLMPipeline.from_pretrained("<this folder>")\n'
        'print(pipe("image.png", "What is in the image?"))\n```\n\n'
        'or `vlmkit generate --checkpoint <this folder> --image image.png --prompt "What is in the image?"`.\n',
    ]
    if processor:
        sections.append("## Image processing\n\n" + "\n".join(f"- {k}: {v}" for k, v in processor.items()) + "\n")
    if metrics:
        lines = "\n".join(f"| {k} | {float(v):.4g} |" for k, v in metrics.items())
        sections.append(f"## Metrics\n\n| metric | value |\n|---|---:|\n{lines}\n")
    if recipe:
        import yaml

        text = yaml.safe_dump(json.loads(json.dumps(recipe, default=str)), sort_keys=False)
        sections.append(f"## Training recipe\n\n```yaml\n{text}```\n")
    return "\n".join(sections)


def _preview(keys: list[str] | set[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
