"""init_from, trainable-only checkpoints, and kill-and-resume equivalence (single process, CPU)."""

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from tiny_models import build_tiny_vlm
from torch import nn

from vlmkit.data import SyntheticVQADataModule
from vlmkit.training.checkpoints import OMITTED_KEY, frozen_state_keys, load_model_weights, restore_frozen
from vlmkit.training.module import VLMModule
from vlmkit.training.schedules import WarmupCosineSchedule

SMALL = dict(min_size=16, max_size=32, max_image_size=32, min_image_size=16, num_val=2)


def _trainer(tmp_path, max_steps, callbacks=(), **kwargs):
    return L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=list(callbacks),
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        **kwargs,
    )


def _module(**kwargs):
    vlm = build_tiny_vlm(train_vision_encoder=kwargs.pop("train_vision_encoder", "full"), train_language_model="full")
    return VLMModule(vlm, **kwargs)


def test_init_from_loads_model_weights_only(tmp_path):
    source = _module()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.5)
    path = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": source.state_dict(), "global_step": 7, "optimizer_states": [{}]}, path)
    target = _module(init_from=str(path))
    assert not torch.equal(next(target.parameters()), next(source.parameters()))
    target.configure_model()
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_init_from_names_checkpoint_keys_that_match_nothing(tmp_path):
    source = _module()
    state = source.state_dict()
    state["vlm.connector.not_a_weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match=r"1 checkpoint keys match no model key: connector\.not_a_weight"):
        _module(init_from=str(tmp_path / "bad.ckpt")).configure_model()
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        _module(init_from=str(tmp_path / "missing.ckpt")).configure_model()


def test_init_from_maps_plain_keys_onto_lora_wrapped_layers(tmp_path):
    class Wrapped(nn.Module):  # the layout peft gives a LoRA layer: base_layer + adapters
        def __init__(self):
            super().__init__()
            self.base_layer = nn.Linear(4, 4)
            self.lora_A = nn.Linear(4, 2, bias=False)

    plain, wrapped = nn.Sequential(nn.Linear(4, 4)), nn.Sequential(Wrapped())
    torch.save({"state_dict": {f"vlm.{k}": v for k, v in plain.state_dict().items()}}, tmp_path / "plain.ckpt")
    missing = load_model_weights(wrapped, tmp_path / "plain.ckpt")
    assert torch.equal(wrapped[0].base_layer.weight, plain[0].weight)
    assert missing == ["0.lora_A.weight"]  # new adapter weights stay as built


def test_trainable_only_checkpoint_roundtrip_and_mismatch_is_named():
    module = _module(train_vision_encoder="frozen", save_trainable_only=True)
    checkpoint = {"state_dict": dict(module.state_dict())}
    module.on_save_checkpoint(checkpoint)
    frozen = frozen_state_keys(module)
    assert frozen and all(k.startswith("vlm.vision_encoder.") for k in frozen)
    assert set(checkpoint[OMITTED_KEY]) == frozen and not frozen & set(checkpoint["state_dict"])
    assert set(checkpoint["state_dict"]) == set(module.state_dict()) - frozen

    fresh = _module(train_vision_encoder="frozen")
    restored = {"state_dict": dict(checkpoint["state_dict"]), OMITTED_KEY: checkpoint[OMITTED_KEY]}
    restore_frozen(restored, fresh)
    fresh.load_state_dict(restored["state_dict"], strict=True)

    broken = {"state_dict": dict(checkpoint["state_dict"]), OMITTED_KEY: checkpoint[OMITTED_KEY]}
    del broken["state_dict"]["vlm.connector.latents"]
    with pytest.raises(ValueError, match=r"not recorded as frozen: \[vlm\.connector\.latents\]"):
        restore_frozen(broken, fresh)
    unfrozen = _module(train_vision_encoder="full")
    with pytest.raises(ValueError, match="frozen when it was saved but train now"):
        restore_frozen({"state_dict": dict(checkpoint["state_dict"]), OMITTED_KEY: checkpoint[OMITTED_KEY]}, unfrozen)


class _Losses(Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def _resumable_module(**kwargs):
    def scheduler(optimizer):
        return WarmupCosineSchedule(optimizer, warmup_steps=2, total_steps=6)

    return _module(optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), scheduler=scheduler, **kwargs)


@pytest.mark.integration
@pytest.mark.parametrize("trainable_only", [False, True], ids=["full", "trainable_only"])
def test_kill_and_resume_equals_one_go(tmp_path, trainable_only):
    # 3 batches per epoch: the step-2 checkpoint is mid-epoch, and the resumed half crosses into epoch 1
    def data():
        return SyntheticVQADataModule(num_train=6, batch_size=2, **SMALL)

    kwargs = dict(train_vision_encoder="frozen" if trainable_only else "full", save_trainable_only=trainable_only)
    L.seed_everything(0)
    losses = _Losses()
    every = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    one_go = _resumable_module(**kwargs)
    _trainer(tmp_path, 4, [losses, every], gradient_clip_val=1.0).fit(one_go, data())
    half = tmp_path / "ckpt" / "step=2.ckpt"
    saved = torch.load(half, weights_only=False)
    assert saved["global_step"] == 2 and saved["SyntheticVQADataModule"] == {"epoch": 0, "batches": 2}
    assert (OMITTED_KEY in saved) == trainable_only

    L.seed_everything(123)  # the resumed run must not depend on the global RNG
    resumed_losses = _Losses()
    resumed = _resumable_module(**kwargs)
    trainer = _trainer(tmp_path / "resumed", 4, [resumed_losses], gradient_clip_val=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(resumed, data(), ckpt_path=half)
    assert not [w for w in caught if "not resumable" in str(w.message)]  # the position is restored: no false alarm
    assert trainer.global_step == 4
    assert sorted(resumed_losses.losses) == [3, 4]
    for step in (3, 4):
        assert resumed_losses.losses[step] == pytest.approx(losses.losses[step], abs=1e-5)
    for (name, a), b in zip(one_go.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 4


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_init_from_full_checkpoint_into_adapted_model_reproduces_its_logits(tmp_path, mode):
    stage1 = build_tiny_vlm(train_vision_encoder="full", train_language_model="full", seed=1).eval()
    torch.save({"state_dict": {f"vlm.{k}": v for k, v in stage1.state_dict().items()}}, tmp_path / "stage1.ckpt")
    data = SyntheticVQADataModule(num_train=2, batch_size=2, **SMALL)
    data.connect(stage1)
    batch = next(iter(data.train_dataloader()))
    inputs = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["patch_mask"])
    stage2 = build_tiny_vlm(train_vision_encoder=mode, train_language_model=mode, seed=0)
    missing = load_model_weights(stage2, tmp_path / "stage1.ckpt")
    assert missing and not set(missing) & frozen_state_keys(stage2)  # only new (trainable) weights stay as built
    # DoRA magnitudes are recomputed from the loaded base weights: the adapted model starts as stage 1
    torch.testing.assert_close(stage2.eval()(*inputs).logits, stage1(*inputs).logits, atol=1e-5, rtol=1e-5)
