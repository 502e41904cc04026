"""``vlmkit export``: a trained checkpoint -> plain safetensors weights (adapters merged) or the adapters alone.

The model is rebuilt from the same recipe the checkpoint was trained with, the checkpoint's weights are loaded,
and then either every LoRA/DoRA adapter is merged into its base weights (``model.safetensors``: loads into the
same recipe composed without adapters, no peft needed; quantized (QLoRA) layers are dequantized first, so the
file loads into the recipe with ``quantization: null``), or only the trainable parameters are written
(``trainable.safetensors``: adapters, connector, fusion blocks, new token rows; loads onto a freshly composed
model with :func:`vlmkit.adapters.load_trainable`). The command ``vlmkit export`` (:mod:`vlmkit.cli.export`) rebuilds
the model from the recipe and saves the resolved recipe next to the weights:

    vlmkit export --config recipes/quickstart.yaml --ckpt_path runs/.../last.ckpt --output_dir exported/
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmkit.adapters import has_adapters, merge_adapters, save_trainable, trainable_state_dict
from vlmkit.quantization import dequantize, quantized_kind


def export(
    vlm, ckpt_path: str | None, output_dir: str | Path, adapters_only: bool = False, trust_checkpoint: bool = False
) -> Path:
    """Write ``vlm`` (after loading ``ckpt_path``) to ``output_dir``; return the weights file.

    Args:
        vlm: The composed ``VisionLanguageModel`` (as the checkpoint was trained).
        ckpt_path: A Lightning checkpoint file or sharded folder; ``None`` exports ``vlm`` as it is. Read with
            ``weights_only=True``.
        output_dir: Created if missing.
        adapters_only: Write only the trainable parameters instead of the merged full model.
        trust_checkpoint: Unpickle ``ckpt_path`` in full (runs any code it holds), with a warning.

    Raises:
        CheckpointError: The checkpoint is missing, empty, truncated, needs full unpickling (without
            ``trust_checkpoint``), or does not fit ``vlm``; the message names the file.
    """
    from safetensors.torch import save_file

    from vlmkit.training.checkpoints import load_model_weights

    if ckpt_path is not None:
        opt_in = "pass --trust_checkpoint to `vlmkit export`"
        load_model_weights(vlm, ckpt_path, trust=trust_checkpoint, opt_in=opt_in)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if adapters_only:
        path = output / "trainable.safetensors"
        save_trainable(vlm, path)
        summary = {"kind": "trainable", "tensors": len(trainable_state_dict(vlm))}
    else:
        merged = has_adapters(vlm)
        quantized = any(quantized_kind(m) is not None for m in vlm.modules())
        merge_adapters(vlm)  # adapters on quantized layers merge into dequantized copies
        dequantize(vlm)  # quantized layers without adapters: plain weights too
        path = output / "model.safetensors"
        state = {k: v.detach().contiguous() for k, v in vlm.state_dict().items()}
        save_file(state, str(path))
        summary = {"kind": "merged" if merged else "full", "dequantized": quantized, "tensors": len(state)}
    (output / "export.json").write_text(json.dumps({**summary, "checkpoint": ckpt_path}, indent=2) + "\n")
    return path
