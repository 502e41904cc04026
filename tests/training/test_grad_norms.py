"""``PartGradNorms``: each part's gradient norm equals the norm computed by hand, logged only on logging steps."""

from types import SimpleNamespace

import torch
from torch import nn

from vlmkit.training.grad_norms import PartGradNorms, part_grad_norms


class _Parts(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision_encoder = nn.Linear(3, 4)
        self.connector = nn.Linear(4, 2)
        self.fusion = nn.Identity()  # no parameters: not logged
        self.language_model = nn.Linear(2, 5)
        self.language_model.bias.requires_grad_(False)  # frozen: no gradient

    def forward(self, x):
        return self.language_model(self.connector(self.vision_encoder(x)))


def _backward(model):
    torch.manual_seed(0)
    model(torch.randn(6, 3)).square().sum().backward()


def test_norms_equal_the_manual_computation():
    model = _Parts()
    _backward(model)
    norms = part_grad_norms(model)
    assert set(norms) == {"vision_encoder", "connector", "language_model", "total"}

    def manual(module):
        grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
        return torch.cat(grads).norm()

    for part in ("vision_encoder", "connector", "language_model"):
        torch.testing.assert_close(norms[part], manual(getattr(model, part)))
    torch.testing.assert_close(norms["total"], manual(model))
    assert part_grad_norms(_Parts()) == {}  # no gradients yet


def test_logged_only_when_due():
    model = _Parts()
    _backward(model)
    logged = []
    module = SimpleNamespace(vlm=model, log_dict=lambda metrics, **kw: logged.append(metrics))
    callback = PartGradNorms(every_n_steps=5)
    for step in range(11):
        callback.on_before_optimizer_step(SimpleNamespace(global_step=step), module, None)
    assert len(logged) == 3  # steps 0, 5, 10
    assert set(logged[0]) == {"grad_norm/vision_encoder", "grad_norm/connector", "grad_norm/language_model",
                              "grad_norm/total"}  # fmt: skip
    due = SimpleNamespace(global_step=3, _logger_connector=SimpleNamespace(should_update_logs=True))
    PartGradNorms().on_before_optimizer_step(due, module, None)  # default: Lightning's own logging steps
    assert len(logged) == 4
