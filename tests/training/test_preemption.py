import os
import signal

import lightning as L
import pytest
from tiny_models import build_tiny_vlm

from vlmkit.data import SyntheticVQADataModule
from vlmkit.training.module import VLMModule
from vlmkit.training.preemption import PreemptionCheckpoint, hpc_checkpoint_path, slurm_job_id


class _SignalInStep2(VLMModule):
    def training_step(self, batch, batch_idx):
        if self.global_step == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives in the middle of the step
        return super().training_step(batch, batch_idx)


def test_hpc_checkpoint_names_follow_lightnings_and_count_up(tmp_path, monkeypatch):
    assert hpc_checkpoint_path(tmp_path) == str(tmp_path / "hpc_ckpt_1.ckpt")
    (tmp_path / "hpc_ckpt_3.ckpt").mkdir()
    assert hpc_checkpoint_path(tmp_path) == str(tmp_path / "hpc_ckpt_4.ckpt")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "70_3"
    with pytest.raises(ValueError, match="SIGNOPE"):
        PreemptionCheckpoint(signal_name="SIGNOPE")


@pytest.mark.integration
def test_signal_saves_at_the_next_step_boundary_and_stops(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # outside SLURM: save and stop, no requeue
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    before = signal.getsignal(signal.SIGUSR1)
    callback = PreemptionCheckpoint()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[callback],
    )
    data = SyntheticVQADataModule(num_train=12, batch_size=2, min_size=16, max_size=32, max_image_size=32, num_val=2)
    trainer.fit(_SignalInStep2(build_tiny_vlm(train_language_model="full")), data)
    assert callback.saved_path == str(tmp_path / "hpc_ckpt_1.ckpt") and callback.saved_step == 2
    assert trainer.global_step == 2  # stopped instead of training on to step 5
    assert os.path.isfile(callback.saved_path)
    assert signal.getsignal(signal.SIGUSR1) == before  # the run's handler is gone afterwards
