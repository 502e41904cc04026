"""RunRecorder: what a run measured lands in one JSON file, including the divergence guard's events."""

import json

import lightning as L
import pytest
import torch
from torch import nn

from vlmkit.ablate.recorder import RunRecorder
from vlmkit.training.divergence import DivergenceError, DivergenceGuard


class Regression(L.LightningModule):
    """A regression whose loss is multiplied by ``inject[step]`` at chosen steps (no ``vlm``: no cost measured)."""

    def __init__(self, inject=None):
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.inject = dict(inject or {})

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.layer(x), y)
        return loss * self.inject.pop(self.global_step + 1, 1.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        x = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)).repeat(16, 1)
        return torch.utils.data.DataLoader(list(zip(x, x.sum(1, keepdim=True))), batch_size=4)


def _trainer(tmp_path, callbacks, max_steps=10, checkpointing=False):
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpointing,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )


def test_a_run_the_guard_stops_is_recorded_as_diverged_with_its_reason(tmp_path):
    path = tmp_path / "run" / "metrics.json"
    trainer = _trainer(tmp_path, [DivergenceGuard(window=3), RunRecorder(str(path))])
    with pytest.raises(DivergenceError):
        trainer.fit(Regression(inject={5: float("nan")}))
    record = json.loads(path.read_text())
    assert record["status"] == "diverged" and "loss is nan at step 5" in record["error"]
    assert record["metrics"]["divergence/events"] == 1.0 and record["metrics"]["divergence/stopped"] == 1.0
    assert record["divergence"]["events"] == ["loss is nan at step 5"]
    assert [step for step, _ in record["train_loss"]] == [1, 2, 3, 4]  # the NaN step is not a training step
    assert not (tmp_path / "run" / "metrics.json.tmp").exists()


def test_rolled_back_spikes_are_counted_and_the_run_finishes(tmp_path):
    path = tmp_path / "metrics.json"
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=2)
    guard = DivergenceGuard(window=3, spike_factor=3.0, action="rollback", max_rollbacks=5)
    trainer = _trainer(tmp_path, [guard, checkpoint, RunRecorder(str(path))], max_steps=14, checkpointing=True)
    trainer.fit(Regression(inject={7: 100.0, 11: 100.0}))
    record = json.loads(path.read_text())
    assert record["status"] == "finished" and record["global_step"] == 14
    assert record["metrics"]["divergence/events"] == 2.0 and record["metrics"]["divergence/rollbacks"] == 2.0
    assert record["checkpoint"].endswith("last.ckpt")


def test_histories_survive_a_resume_through_the_checkpoint():
    recorder = RunRecorder("unused.json")
    recorder.train_loss, recorder.history = [[1, 2.0], [2, 1.0]], [{"step": 2, "val/loss": 1.5}]
    recorder.divergence_events = ["loss spike at step 2"]
    resumed = RunRecorder("unused.json")
    resumed.load_state_dict(recorder.state_dict())
    assert resumed.train_loss == [[1, 2.0], [2, 1.0]] and resumed.history == [{"step": 2, "val/loss": 1.5}]
    assert resumed.divergence_events == ["loss spike at step 2"]


@pytest.mark.integration
def test_a_vlm_run_records_metrics_parameters_and_the_cost_of_a_batch(tmp_path, tiny_vlm):
    from tiny_models import build_tiny_vlm

    from vlmkit.data.synthetic_datamodule import SyntheticVQADataModule
    from vlmkit.trainability import count_parameters
    from vlmkit.training.module import VLMModule

    vlm = build_tiny_vlm(train_vision_encoder="full", train_language_model="lora")
    data = SyntheticVQADataModule(
        tasks=["color"], num_train=8, num_val=4, batch_size=4, max_size=32, max_image_size=32, max_shapes=1
    )
    path = tmp_path / "fit" / "metrics.json"
    trainer = _trainer(tmp_path, [RunRecorder(str(path))], max_steps=2)
    trainer.fit(VLMModule(vlm), datamodule=data)
    record = json.loads(path.read_text())
    assert record["status"] == "finished" and record["command"] == "fit" and record["global_step"] == 2
    assert {"val/accuracy", "val/loss", "train/loss"} <= set(record["metrics"])
    assert record["metrics"]["val/majority_baseline"] == data.majority_baseline("val")  # the report's baseline line
    assert record["history"][-1]["step"] == 2 and len(record["train_loss"]) == 2
    assert record["parameters"]["total"] == [count_parameters(vlm), count_parameters(vlm, trainable_only=True)]
    assert record["parameters"]["vision_encoder"][0] == record["parameters"]["vision_encoder"][1]  # full
    cost = record["cost"]
    assert cost["visual_tokens"] == 4.0 and cost["images"] == 1.0  # 4 perceiver latents, one image per sample
    assert 0 < cost["encoder_patches"] <= 16 and cost["forward_gflops"] > 0
    assert record["metrics"]["cost/forward_gflops"] == cost["forward_gflops"]
    # Under `validate` (inference mode) the same costs are measured, and the model's trainability is left as it was.
    trainable = [p.requires_grad for p in vlm.parameters()]
    validate_path = tmp_path / "validate" / "metrics.json"
    _trainer(tmp_path, [RunRecorder(str(validate_path))]).validate(VLMModule(vlm), datamodule=data)
    validated = json.loads(validate_path.read_text())
    assert validated["command"] == "validate" and validated["cost"] == cost
    assert [p.requires_grad for p in vlm.parameters()] == trainable
