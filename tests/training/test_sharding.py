"""FullyShard's mesh checks and the FSDP1 policies (the sharding itself runs in test_distributed.py)."""

import pytest
from lightning.pytorch.strategies import FSDPStrategy

from vlmkit.training.module import VLMModule
from vlmkit.training.sharding import FullyShard, fsdp1_policies, parameters_without_gradient


class FakeMesh:
    """Enough of a ``DeviceMesh`` for the checks that run before any collective."""

    device_type = "cpu"

    def __init__(self, shape, names):
        self.shape, self.mesh_dim_names = tuple(shape), tuple(names)

    def size(self, dim=None):
        total = 1
        for n in self.shape:
            total *= n
        return total if dim is None else self.shape[dim]

    def __getitem__(self, name):
        i = self.mesh_dim_names.index(name)
        return FakeMesh((self.shape[i],), (name,))


def test_tensor_parallel_mesh_and_bad_shard_size_are_refused():
    lightning_default = FakeMesh((1, 4), ("data_parallel", "tensor_parallel"))  # ModelParallelStrategy() on 4 GPUs
    with pytest.raises(ValueError, match=r"tensor_parallel_size=4 .*data_parallel_size=<world size>"):
        FullyShard().mesh(lightning_default)
    with pytest.raises(ValueError, match="shard_size=3 does not divide the world size 4"):
        FullyShard(shard_size=3).mesh(FakeMesh((4, 1), ("data_parallel", "tensor_parallel")))
    with pytest.raises(ValueError, match="shard_size must be >= 1"):
        FullyShard(shard_size=0)


def test_fsdp1_policies_are_the_block_classes_of_every_part(tiny_vlm):
    policies = fsdp1_policies(tiny_vlm.block_classes())
    names = {cls.__name__ for cls in policies["auto_wrap_policy"]}
    assert {"SiglipEncoderLayer", "MistralDecoderLayer"} <= names and len(names) == 3  # + the perceiver layer
    assert set(policies) == {"auto_wrap_policy"}  # activation checkpointing is the model's one switch
    FSDPStrategy(**policies)  # Lightning accepts them as they are


def test_trainable_only_checkpoints_are_refused_under_sharding(tiny_vlm):
    module = VLMModule(tiny_vlm, save_trainable_only=True)
    module._device_mesh = FakeMesh((2, 1), ("data_parallel", "tensor_parallel"))
    with pytest.raises(ValueError, match="save_trainable_only needs single-file checkpoints"):
        module.configure_model()


def test_parameters_without_gradient_names_trainable_weights_outside_the_loss():
    import torch

    model = torch.nn.ModuleDict({"used": torch.nn.Linear(2, 2), "unused": torch.nn.Linear(2, 2)})
    model["unused"].bias.requires_grad_(False)
    model["used"](torch.ones(1, 2)).sum().backward()
    assert parameters_without_gradient(model) == ["unused.weight"]


@pytest.fixture
def single_process_group():
    """A one-rank gloo group (in-memory store, no environment variables), destroyed after the test."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("gradient_checkpointing", [True, False])
def test_blocks_are_checkpointed_once_when_both_switches_are_on(single_process_group, gradient_checkpointing):
    import warnings

    import torch
    from tiny_models import build_tiny_vlm
    from torch.distributed._composable.contract import _get_registry

    vlm = build_tiny_vlm(train_language_model="full", gradient_checkpointing=gradient_checkpointing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FullyShard(activation_checkpointing=True).apply(vlm, vlm.block_classes(), single_process_group)
    warned = [w for w in caught if "already recompute their activations" in str(w.message)]
    assert len(warned) == int(gradient_checkpointing)
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    wrapper = vlm.language_model.decoder_layers()[0]
    layer = wrapper._checkpoint_wrapped_module  # the decoder layer itself, checkpointed by one wrapper
    assert isinstance(wrapper, CheckpointWrapper) and not isinstance(layer, CheckpointWrapper)
    assert set(_get_registry(layer) or {}) == {"fully_shard"}  # no composable checkpoint on top
    forwards = []
    forward = layer.forward  # counted here: recomputation runs the forward without forward hooks

    def counted(*args, **kwargs):
        forwards.append(1)
        return forward(*args, **kwargs)

    layer.forward = counted
    ids = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(0))
    vlm(ids).logits.sum().backward()
    assert len(forwards) == 2  # forward + one recomputation in backward (3 when checkpointed twice)
