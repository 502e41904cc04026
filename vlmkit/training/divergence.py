"""``DivergenceGuard``: stop, or roll back to the last checkpoint, when the training loss diverges.

Paper Finding 3: unfreezing the backbones of a fully autoregressive VLM makes training diverge.
The guard watches the training loss of every optimizer step (the mean over its accumulated micro-batches): a
non-finite loss, or a loss above ``spike_factor`` times the moving mean of the last ``window`` steps, is
divergence. All ranks decide together (one rank's NaN stops every rank) from one all-gather of the step's losses
per optimizer step, and nothing is read back from the device between steps. ``action="stop"`` raises
:class:`DivergenceError` before any later checkpoint is written; ``action="rollback"`` reloads the
model, optimizer and scheduler states of the last checkpoint and carries on with the next batches
(the step counter and the data keep moving, so the batches that diverged are not replayed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from vlmkit.training.safe_loading import guarded_load, verify_sharded


class DivergenceError(RuntimeError):
    """The training loss diverged (non-finite or a spike) and the guard stopped the run."""


class DivergenceGuard(Callback):
    """Detect a non-finite loss or a loss spike and stop or roll back.

    Args:
        window: Number of recent finite losses in the moving mean; spikes are only judged once
            the window is full.
        spike_factor: A loss above ``spike_factor * moving mean`` is a spike (``<= 0`` or ``inf``
            disables spike detection; NaN/inf are always caught).
        action: ``"stop"`` raises :class:`DivergenceError`; ``"rollback"`` reloads the last checkpoint.
        checkpoint_path: Checkpoint to roll back to; default: the ``ModelCheckpoint``'s latest
            (``last_model_path``, else ``best_model_path``).
        max_rollbacks: Rollbacks allowed before the guard stops the run.
        trust_checkpoint: Unpickle the rollback checkpoint in full (``weights_only=False``), with a warning; by
            default it is read with ``weights_only=True`` and a file that needs more is refused (unpickling runs
            any code the file holds).

    Example (YAML, under ``trainer.callbacks``)::

        - class_path: vlmkit.training.DivergenceGuard
          init_args: {window: 50, spike_factor: 3.0, action: rollback}
    """

    def __init__(
        self,
        window: int = 50,
        spike_factor: float = 3.0,
        action: Literal["stop", "rollback"] = "stop",
        checkpoint_path: str | None = None,
        max_rollbacks: int = 3,
        trust_checkpoint: bool = False,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if action not in ("stop", "rollback"):
            raise ValueError(f"action must be 'stop' or 'rollback', got {action!r}")
        self.window = window
        self.spike_factor = spike_factor
        self.action = action
        self.checkpoint_path = checkpoint_path
        self.max_rollbacks = max_rollbacks
        self.trust_checkpoint = trust_checkpoint
        self.rollbacks = 0
        self.events: list[str] = []
        self._recent: deque[float] = deque(maxlen=window)
        self._step_seen = 0  # trainer.global_step after the last judged optimizer step
        self._pending: tuple[torch.Tensor, int] | None = None  # this step's summed micro-batch losses, count

    def check(self, loss: float, step: int) -> str | None:
        """Why ``loss`` at ``step`` is divergence, or ``None`` (and the loss joins the moving window)."""
        return self.check_ranks([loss], step)[0]

    def check_ranks(self, losses: Sequence[float], step: int) -> list[str | None]:
        """Each rank's reason why its loss at ``step`` is divergence (``None``: fine).

        When no rank diverged, the mean of ``losses`` joins the moving window; every rank judges the same
        gathered losses against the same window, so all ranks agree without another collective.
        """
        mean = None
        if len(self._recent) == self.window and 0 < self.spike_factor < math.inf:
            mean = sum(self._recent) / len(self._recent)
        reasons = [self._reason(loss, step, mean) for loss in losses]
        if all(reason is None for reason in reasons):
            self._recent.append(sum(losses) / len(losses))
        return reasons

    def _reason(self, loss: float, step: int, mean: float | None) -> str | None:
        if not math.isfinite(loss):
            return f"loss is {loss} at step {step}"
        if mean is not None and loss > self.spike_factor * mean:
            return (
                f"loss spike at step {step}: {loss:.4g} > {self.spike_factor:g} x {mean:.4g} "
                f"(mean of the last {self.window} steps)"
            )
        return None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start counting optimizer steps from where training (re)starts."""
        self._step_seen = trainer.global_step
        self._pending = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Add this micro-batch's loss to the step's; after an optimizer step, judge it (agreed across ranks)."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:  # Lightning's loss is divided by accumulate_grad_batches: the sum is the step's mean
            loss = loss.detach().float() * trainer.accumulate_grad_batches
            total, count = self._pending or (0.0, 0)
            self._pending = (loss + total, count + 1)  # stays on the device: no sync per micro-batch
        if trainer.global_step == self._step_seen:  # still accumulating gradients: no optimizer step yet
            return
        self._step_seen = trainer.global_step
        if self._pending is None:
            return
        total, count = self._pending
        self._pending = None
        losses = trainer.strategy.all_gather(total / count).reshape(-1).tolist()  # [world]: the one sync
        reasons = self.check_ranks(losses, trainer.global_step)
        if all(reason is None for reason in reasons):
            return
        reason = _name_ranks(reasons)
        self.events.append(reason)
        if self.action == "stop" or self.rollbacks >= self.max_rollbacks:
            why = "" if self.action == "stop" else f" after {self.rollbacks} rollbacks"
            raise DivergenceError(f"DivergenceGuard stopped training{why}: {reason}")
        self._rollback(trainer, pl_module, reason)

    def _rollback(self, trainer: L.Trainer, pl_module: L.LightningModule, reason: str) -> None:
        path = self.checkpoint_path
        if path is None and trainer.checkpoint_callback is not None:
            path = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
        if not path or not Path(path).exists():
            raise DivergenceError(f"DivergenceGuard: {reason}; no checkpoint to roll back to (got {path!r})")

        def read(weights_only: bool) -> dict[str, Any]:
            if weights_only and Path(path).is_dir():  # FSDP2 reads the folder in place with torch's pickle reader
                verify_sharded(Path(path))
            return trainer.strategy.load_checkpoint(path, weights_only=weights_only)

        opt_in = "set trust_checkpoint: true on the DivergenceGuard"
        checkpoint = guarded_load(path, read, trust=self.trust_checkpoint, opt_in=opt_in, what="rollback checkpoint")
        pl_module.on_load_checkpoint(checkpoint)
        trainer.strategy.load_model_state_dict(checkpoint, strict=pl_module.strict_loading)
        trainer.strategy.load_optimizer_state_dict(checkpoint)
        for config, state in zip(trainer.lr_scheduler_configs, checkpoint.get("lr_schedulers", [])):
            config.scheduler.load_state_dict(state)
        for optimizer in trainer.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.rollbacks += 1
        rank_zero_warn(
            f"DivergenceGuard: {reason}; rolled back to {path} (step {checkpoint.get('global_step', '?')}), "
            f"rollback {self.rollbacks} of {self.max_rollbacks}; training continues from step {trainer.global_step}"
        )

    def state_dict(self) -> dict[str, Any]:
        """Rollbacks so far and the moving window, saved in checkpoints."""
        return {"rollbacks": self.rollbacks, "recent": list(self._recent)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the rollbacks count and the moving window."""
        self.rollbacks = int(state_dict.get("rollbacks", 0))
        self._recent = deque((float(x) for x in state_dict.get("recent", [])), maxlen=self.window)


def _name_ranks(reasons: list[str | None]) -> str:
    """The ranks' reasons, each prefixed with its rank when several processes train."""
    if len(reasons) == 1:
        return reasons[0] or ""
    return "; ".join(f"rank {rank}: {text}" for rank, text in enumerate(reasons) if text is not None)
