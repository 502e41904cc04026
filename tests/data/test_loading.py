from types import SimpleNamespace

import pytest
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

from vlmkit.data import SyntheticVQADataModule


def _trainer(accelerator, num_devices=1):
    return SimpleNamespace(accelerator=accelerator, num_devices=num_devices, distributed_sampler_kwargs=None)


def test_workers_and_pinned_memory_follow_the_trainers_device(monkeypatch):
    from vlmkit.data.loading import loader_options

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    off = {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    assert loader_options(None) == off  # outside a trainer
    assert loader_options(_trainer(CPUAccelerator())) == off  # CPU: data and model share the cores
    gpu = _trainer(CUDAAccelerator())
    assert loader_options(gpu) == {"num_workers": 4, "pin_memory": True, "persistent_workers": True}
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert loader_options(_trainer(CUDAAccelerator(), num_devices=2))["num_workers"] == 3  # cores per process
    assert loader_options(gpu, num_workers=0, pin_memory=False) == off  # explicit settings win
    assert loader_options(_trainer(CPUAccelerator()), num_workers=2)["persistent_workers"]
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        loader_options(gpu, num_workers=-1)


def test_synthetic_loaders_pin_memory_and_use_workers_on_gpu_only(tiny_vlm, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    dm = SyntheticVQADataModule(num_train=4, num_val=2, batch_size=2)
    dm.connect(tiny_vlm)
    dm.trainer = _trainer(CUDAAccelerator())
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.predict_dataloader()):
        assert (loader.num_workers, loader.pin_memory, loader.persistent_workers) == (4, True, True)
    dm.trainer = _trainer(CPUAccelerator())
    loader = dm.train_dataloader()
    assert (loader.num_workers, loader.pin_memory) == (0, False)
