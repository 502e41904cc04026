"""``RunRecorder``: what one ``vlmkit fit`` / ``validate`` / ``test`` run measured, as one JSON file.

The ablation runner appends it to every run it launches (``--trainer.callbacks+=vlmkit.ablate.RunRecorder``); it
works in any recipe. It writes, atomically and once the run is over, the final logged metrics, the history of
validations and of the training loss, the model's parameters per part (total and trainable, as declared at
composition), the measured cost of one validation batch (forward FLOPs, encoder patches, visual tokens and LM
tokens per sample) and the :class:`~vlmkit.training.DivergenceGuard`'s events. A run stopped by the guard is
recorded with ``status: "diverged"`` before the error propagates. Its state (histories, divergence events) is saved
in checkpoints, so a resumed run keeps what it recorded before the interruption.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.flop_counter import FlopCounterMode

from vlmkit.trainability import count_parameters, temporarily_frozen
from vlmkit.training.divergence import DivergenceError, DivergenceGuard

PARTS = ("vision_encoder", "connector", "fusion", "language_model")


class RunRecorder(Callback):
    """Write the run's metrics, histories, parameters, cost and divergence events to ``path`` (JSON).

    Args:
        path: The JSON file to write (its folder is created).
        measure_cost: Measure the forward FLOPs and token counts of one validation batch at the start.

    The file holds ``status`` (``finished`` or ``diverged``), ``command`` (``fit``/``validate``/``test``),
    ``global_step``, ``metrics`` (every logged scalar at the end, e.g. ``val/accuracy``; plus ``divergence/events``,
    ``divergence/rollbacks``, ``parameters/total``, ``parameters/trainable`` and the ``cost/*`` entries below),
    ``history`` (one entry per validation: ``step`` and its scalars), ``train_loss`` (``[step, loss]`` per step),
    ``parameters`` (``{part: [total, trainable]}``), ``divergence`` (``events``: the guard's reasons),
    ``checkpoint`` (the last checkpoint written, if any) and ``seconds``.
    """

    def __init__(self, path: str, measure_cost: bool = True) -> None:
        self.path = Path(path)
        self.measure_cost = measure_cost
        self.history: list[dict[str, float]] = []
        self.train_loss: list[list[float]] = []
        self.divergence_events: list[str] = []
        self._seen_events = 0
        self._started = time.perf_counter()
        self._parameters: dict[str, list[int]] = {}
        self._cost: dict[str, float] = {}

    # -- collection ---------------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Start the clock."""
        self._started = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Count parameters and measure the cost of one validation batch."""
        self._describe_model(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Under ``validate``: count parameters and measure cost (under ``fit`` it was done at the start)."""
        if trainer.state.fn == "validate" and not self._parameters:
            self._describe_model(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Under ``test``: count parameters and measure cost."""
        if not self._parameters:
            self._describe_model(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Keep this step's training loss and any new divergence event."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.train_loss.append([trainer.global_step, _number(loss)])
        self._collect_divergence(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep this validation's scalars; under ``validate`` this is the end of the run."""
        if trainer.sanity_checking:
            return
        self.history.append(
            {"step": trainer.global_step, **_scalars(trainer.callback_metrics), **_data_levels(trainer)}
        )
        if trainer.state.fn == "validate":
            self._write(trainer, pl_module, "finished")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The end of a ``test`` run."""
        self._write(trainer, pl_module, "finished")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The end of a ``fit`` run."""
        self._collect_divergence(trainer)
        self._write(trainer, pl_module, "finished")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Record a run the divergence guard stopped (other errors are left to the caller's log)."""
        if isinstance(exception, DivergenceError):
            self._collect_divergence(trainer)
            self._write(trainer, pl_module, "diverged", error=str(exception))

    # -- checkpointed state ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Histories and divergence events so far (saved in checkpoints, so a resumed run keeps them)."""
        return {"history": self.history, "train_loss": self.train_loss, "divergence_events": self.divergence_events}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the histories and divergence events of the checkpoint."""
        self.history = list(state_dict.get("history", []))
        self.train_loss = list(state_dict.get("train_loss", []))
        self.divergence_events = list(state_dict.get("divergence_events", []))

    # -- helpers --------------------------------------------------------------------------------------------------

    def _collect_divergence(self, trainer: L.Trainer) -> None:
        for callback in trainer.callbacks:
            if isinstance(callback, DivergenceGuard):
                new = callback.events[self._seen_events :]
                self.divergence_events.extend(new)
                self._seen_events = len(callback.events)

    def _describe_model(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        vlm = getattr(pl_module, "vlm", None)
        if vlm is None:
            return
        for part in PARTS:
            module = getattr(vlm, part, None)
            if module is not None:
                self._parameters[part] = [count_parameters(module), count_parameters(module, trainable_only=True)]
        self._parameters["total"] = [count_parameters(vlm), count_parameters(vlm, trainable_only=True)]
        if self.measure_cost:
            try:
                self._cost = _batch_cost(trainer, pl_module)
            except Exception as err:  # cost is informative: never fail a run for it
                rank_zero_warn(f"RunRecorder: could not measure the cost of a validation batch ({err})")

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str, error: str | None = None) -> None:
        if trainer.global_rank != 0:
            return
        metrics = {**_scalars(trainer.callback_metrics), **_data_levels(trainer)}
        metrics["divergence/events"] = float(len(self.divergence_events))
        guard = next((c for c in trainer.callbacks if isinstance(c, DivergenceGuard)), None)
        metrics["divergence/rollbacks"] = float(guard.rollbacks) if guard is not None else 0.0
        metrics["divergence/stopped"] = float(status == "diverged")
        if self._parameters:
            metrics["parameters/total"], metrics["parameters/trainable"] = map(float, self._parameters["total"])
        metrics.update({f"cost/{k}": v for k, v in self._cost.items()})
        checkpoint = trainer.checkpoint_callback
        record = {
            "status": status,
            "command": str(trainer.state.fn.value if trainer.state.fn is not None else ""),
            "global_step": trainer.global_step,
            "metrics": metrics,
            "history": self.history,
            "train_loss": self.train_loss,
            "parameters": self._parameters,
            "cost": self._cost,
            "divergence": {"events": self.divergence_events},
            "checkpoint": (checkpoint.last_model_path or checkpoint.best_model_path or None) if checkpoint else None,
            "seconds": round(time.perf_counter() - self._started, 2),
        }
        if error is not None:
            record["error"] = error
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(record, indent=1, allow_nan=True) + "\n")
        os.replace(temporary, self.path)


def _batch_cost(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
    """Forward FLOPs, encoder patches, visual tokens and LM tokens per sample of the first validation batch."""
    datamodule = trainer.datamodule
    if datamodule is None:
        return {}
    loaders = datamodule.val_dataloader()
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    batch = move_data_to_device(next(iter(loader)), pl_module.device)
    vlm = pl_module.vlm
    size = batch["input_ids"].shape[0]
    cost = {"lm_tokens": float(batch["attention_mask"].sum()) / size}
    if batch.get("pixel_values") is not None:
        patch = vlm.vision_encoder.patch_size
        n, _, height, width = batch["pixel_values"].shape
        mask = batch.get("patch_mask")
        patches = mask.flatten(1).sum(1).tolist() if mask is not None else [(height // patch) * (width // patch)] * n
        cost["images"] = n / size
        cost["encoder_patches"] = sum(patches) / size
        cost["visual_tokens"] = sum(vlm.connector.num_visual_tokens(int(p)) for p in patches) / size
    try:
        cost["forward_gflops"] = _forward_flops(pl_module, batch) / size / 1e9
    except Exception as err:  # the token counts above still stand
        rank_zero_warn(f"RunRecorder: could not count the forward FLOPs of a validation batch ({err})")
    return cost


def _forward_flops(pl_module: L.LightningModule, batch: dict[str, Any]) -> int:
    """FLOPs of one eval-mode forward of ``batch``, with every parameter frozen meanwhile.

    The counter's module tracker fails on trainable parameters used without autograd, as under ``validate``.
    """
    was_training = pl_module.training
    counter = FlopCounterMode(display=False)
    try:
        with temporarily_frozen(pl_module.eval()), torch.no_grad(), counter:
            pl_module(batch)
    finally:
        pl_module.train(was_training)
    return counter.get_total_flops()


def _number(value: Any) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


def _data_levels(trainer: L.Trainer) -> dict[str, float]:
    """Reference levels the data itself knows (``val/majority_baseline`` of the synthetic questions), if any.

    The data module logs them straight to the loggers, which ``callback_metrics`` does not see.
    """
    baseline = getattr(trainer.datamodule, "majority_baseline", None)
    return {"val/majority_baseline": float(baseline("val"))} if callable(baseline) else {}


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            continue
        number = _number(value)
        out[name] = number if math.isfinite(number) else float("nan")
    return out
