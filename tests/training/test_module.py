import pytest
import torch

from vlmkit.text.template import IGNORE_INDEX
from vlmkit.training.module import VLMModule, answer_exact_match, answer_loss
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
