import types

import pytest
import torch

from vlmkit.text.template import IGNORE_INDEX
from vlmkit.training.module import VLMModule, answer_exact_match, answer_loss, prefer_fused, scored_positions
from vlmkit.training.schedules import WarmupCosineSchedule


def test_answer_loss_ignores_unlabelled_tokens_and_shifts():
    logits = torch.zeros(1, 4, 5)
    logits[0, 1, 3] = 10.0  # position 1 predicts token 2's label (3)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, IGNORE_INDEX]])
    reference = torch.nn.functional.cross_entropy(logits[0, 1:2], torch.tensor([3]))
    assert torch.allclose(answer_loss(logits, labels), reference)
    logits[0, 0] = 100.0  # an unlabelled position cannot change the loss
    assert torch.allclose(answer_loss(logits, labels), reference)


def test_exact_match_needs_every_answer_token():
    labels = torch.tensor([[IGNORE_INDEX, 2, 3], [IGNORE_INDEX, 2, 3], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    logits = torch.zeros(3, 3, 5)
    logits[0, 0, 2] = logits[0, 1, 3] = 1  # both right
    logits[1, 0, 2] = logits[1, 1, 4] = 1  # second wrong
    assert answer_exact_match(logits, labels).tolist() == [True, False, False]


@pytest.fixture(scope="module")
def module():
    from tiny_models import build_tiny_vlm

    vlm = build_tiny_vlm(train_vision_encoder="frozen", train_language_model="full")
    return VLMModule(vlm, learning_rates={"connector": 1e-2})


def test_param_groups_follow_declared_trainability_and_rates(module):
    groups = {g["name"]: g for g in module.param_groups()}
    assert set(groups) == {"connector", "language_model"}  # frozen encoder has no group
    assert groups["connector"]["lr"] == 1e-2 and "lr" not in groups["language_model"]
    trainable = {id(p) for p in module.parameters() if p.requires_grad}
    assert {id(p) for g in groups.values() for p in g["params"]} == trainable
    optimizer = module.optimizer(module.param_groups())
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 1e-3]  # AdamW default for the rest


def test_default_adamw_runs_fused_with_the_same_update():
    torch.manual_seed(0)
    weights = [torch.randn(50, 8), torch.randn(8)]
    grads = [torch.randn_like(w) for w in weights]
    results = []
    for fuse in (False, True):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "lr": 1e-2}])
        assert prefer_fused(optimizer) if fuse else True
        for _ in range(3):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
        results.append(params)
    assert all(g["fused"] for g in optimizer.param_groups)
    for plain, fused in zip(*results):
        torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-5)
    chosen = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], foreach=True)
    assert not prefer_fused(chosen) and chosen.param_groups[0]["foreach"]  # an explicit choice is kept


def test_the_module_builds_fused_adamw(module):
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and all(g["fused"] for g in optimizer.param_groups)


def test_unknown_learning_rate_key_is_named(module):
    with pytest.raises(ValueError, match=r"unknown parts \['llm'\]"):
        VLMModule(module.vlm, learning_rates={"llm": 1e-3})


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = WarmupCosineSchedule(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.2) and lrs[3] == pytest.approx(0.8)
    assert lrs[4] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.55)
    assert lrs[14] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.1)


def plain_batches(vlm, num_batches: int = 2) -> list[dict]:
    """Collated batches made without any vlmkit data module, carrying extra keys a user's data might have."""
    from PIL import Image

    from vlmkit.data import VLMCollator, VLMProcessor
    from vlmkit.text import Turn

    processor = VLMProcessor.from_model(vlm, max_image_size=32, min_image_size=16)
    collate = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size)
    batches = []
    for b in range(num_batches):
        items = []
        for i, (color, name) in enumerate([((200, 0, 0), "red"), ((0, 0, 200), "blue")]):
            turns = [Turn("user", [{"type": "image"}, "What color?"]), Turn("assistant", [name])]
            item = processor([Image.new("RGB", (16 + 8 * b, 24), color)], turns)
            item.update(references=[name], task_index=i, task="color")  # keys that mean nothing to the module
            items.append(item)
        batches.append(collate(items))
    return batches


def test_scored_positions_are_those_predicting_a_label_in_any_row():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 4, IGNORE_INDEX], [IGNORE_INDEX] * 4 + [5]])
    assert scored_positions(labels).tolist() == [1, 2, 3]
    assert scored_positions(torch.full((2, 3), IGNORE_INDEX)) is None  # nothing labelled: all positions


def test_training_step_computes_logits_at_labelled_positions_only_with_the_same_loss_and_gradients(module, monkeypatch):
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)  # no trainer here
    monkeypatch.setattr(module, "_trainer", types.SimpleNamespace(optimizers=[]))
    batch = plain_batches(module.vlm, 1)[0]
    head = module.vlm.language_model.get_output_embeddings()
    rows = []
    hook = head.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[1]))
    try:
        loss = module.training_step(batch, 0)
    finally:
        hook.remove()
    labelled = int((batch["labels"][:, 1:] != IGNORE_INDEX).any(0).sum())
    assert rows == [labelled] and labelled < batch["input_ids"].shape[1] - 1  # the answers, not the prompts
    loss.backward()
    got = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad()
    expected = answer_loss(module(batch).logits, batch["labels"])  # every position scored
    expected.backward()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=1e-5)
    for name, param in module.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(got[name], param.grad, atol=1e-6, rtol=1e-4, msg=name)
    module.zero_grad()


class DataWithExtras(__import__("lightning").LightningDataModule):
    """A data module with attributes vlmkit's data modules have: the module must not read them."""

    def __init__(self, batches) -> None:
        super().__init__()
        self.batches = batches

    def majority_baseline(self, split: str = "val") -> float:
        return 0.123

    @property
    def evaluation_tasks(self):
        raise AssertionError("VLMModule read the data module's evaluation_tasks")

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.batches, batch_size=None)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.batches, batch_size=None)


def test_the_module_trains_and_validates_on_plain_dataloaders_of_batches():
    import lightning as L
    from tiny_models import build_tiny_vlm

    vlm = build_tiny_vlm(train_language_model="full")
    batches = plain_batches(vlm)
    module = VLMModule(vlm, learning_rates={"connector": 1e-2})
    before = {n: p.detach().clone() for n, p in vlm.named_parameters() if p.requires_grad}
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = L.Trainer(max_steps=2, num_sanity_val_steps=0, enable_model_summary=False, **options)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert any(not torch.equal(p, before[n]) for n, p in vlm.named_parameters() if n in before)
    metrics = L.Trainer(enable_model_summary=False, **options).validate(module, loader, verbose=False)[0]
    assert {"val/loss", "val/accuracy", "val/accuracy_color"} <= set(metrics)  # teacher-forced, per task
    assert module.evaluation_results == {}


def test_the_module_reads_nothing_from_the_data_module():
    import lightning as L
    from tiny_models import build_tiny_vlm

    vlm = build_tiny_vlm()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(VLMModule(vlm), DataWithExtras(plain_batches(vlm, 1)), verbose=False)[0]
    assert "val/loss" in metrics and "val/majority_baseline" not in metrics
