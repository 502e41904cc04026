"""Surviving preemption and time limits: save on a signal with every rank at the same step, requeue, stop.

SLURM sends ``SIGUSR1`` some time before a job's time limit (``#SBATCH --signal=SIGUSR1@90``; a preemption
with a grace time sends ``SIGTERM``, set ``signal_name`` to it for that). Lightning's own
SLURM handler saves the checkpoint *inside* the signal handler, at whatever point each rank was
interrupted; under FSDP2 saving is a collective, and a rank interrupted inside a forward's all-gather and
another inside backward wait for each other forever (or pair the wrong collectives). Here the handler only
records the signal; after each optimizer step the ranks agree (one small all-reduce of the flag) and, if
any rank got the signal, all of them save Lightning's ``hpc_ckpt_<n>.ckpt`` together, then rank 0
requeues the job and training stops. The next run resumes from the newest checkpoint
(``examples/slurm/multinode.sbatch`` passes it; under SLURM Lightning also picks up ``hpc_ckpt_*`` by
itself when no ``--ckpt_path`` is given).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def hpc_checkpoint_path(folder: str | os.PathLike) -> str:
    """The next ``hpc_ckpt_<n>.ckpt`` in ``folder`` (``n`` one above the highest present), Lightning's naming."""
    numbers = [
        int(m.group(1)) for p in Path(folder).glob("hpc_ckpt_*") if (m := re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name))
    ]
    return os.path.join(os.fspath(folder), f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt")


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes (array jobs: ``<array job>_<task>``), or ``None`` outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class PreemptionCheckpoint(Callback):
    """On ``signal_name``, save a checkpoint at the next optimizer step on all ranks together, requeue, stop.

    Installed when training starts (replacing Lightning's SLURM ``SIGUSR1`` handler for the run; Lightning
    restores the previous handlers when the run ends).

    Args:
        signal_name: The signal that announces the end (SLURM time limit: ``--signal=SIGUSR1@<seconds>``;
            preemption with a grace time: ``SIGTERM``).
        requeue: After saving, rank 0 runs ``scontrol requeue <job id>`` when inside a SLURM job.
        check_every_n_steps: Optimizer steps between the ranks' agreement on the flag (one all-reduce of a
            single number each time); keep the interval well inside the signal's lead time.

    Example:
        >>> trainer = L.Trainer(callbacks=[PreemptionCheckpoint()])  # doctest: +SKIP
    """

    def __init__(self, signal_name: str = "SIGUSR1", requeue: bool = True, check_every_n_steps: int = 1) -> None:
        if not hasattr(signal, signal_name):
            raise ValueError(f"signal_name={signal_name!r} is not a signal of this platform")
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.signal_name = signal_name
        self.requeue = requeue
        self.check_every_n_steps = check_every_n_steps
        self.requested = False
        self.saved_path: str | None = None
        self.saved_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Replace the signal's handler by one that only records the signal."""
        self.requested = False
        signal.signal(getattr(signal, self.signal_name), self._record)

    def _record(self, signum, frame) -> None:
        self.requested = True  # no I/O, no collective: the rank may be inside one

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Every ``check_every_n_steps`` optimizer steps: if any rank got the signal, all save, requeue and stop."""
        accumulating = getattr(trainer.fit_loop, "_should_accumulate", lambda: False)()
        if accumulating or trainer.global_step % self.check_every_n_steps:
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        path = trainer.strategy.broadcast(hpc_checkpoint_path(trainer.default_root_dir))  # one name for all ranks
        trainer.save_checkpoint(path)
        self.saved_path, self.saved_step = path, trainer.global_step
        if trainer.is_global_zero:
            log.warning("%s: saved %s at step %d", self.signal_name, path, trainer.global_step)
            job = slurm_job_id()
            if self.requeue and job is not None:
                result = subprocess.run(["scontrol", "requeue", job], check=False)
                log.warning("requeue of SLURM job %s: %s", job, "done" if result.returncode == 0 else "failed")
        trainer.should_stop = True
