"""FSDP2Strategy: every rank data-parallel, sized from the world, so recipes need no GPU count."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from vlmkit.training import FSDP2Strategy

ROOT = Path(__file__).resolve().parents[2]


def test_data_parallel_size_defaults_to_the_world_size(monkeypatch):
    monkeypatch.setattr(ModelParallelStrategy, "setup_environment", lambda self: None)  # no process group here
    strategy = FSDP2Strategy()
    strategy.parallel_devices = [torch.device("cpu")] * 4
    strategy.num_nodes = 3
    strategy.setup_environment()
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (12, 1)
    explicit = FSDP2Strategy(data_parallel_size=6, tensor_parallel_size=2)
    explicit.parallel_devices, explicit.num_nodes = [torch.device("cpu")] * 4, 3
    explicit.setup_environment()
    assert explicit._data_parallel_size == 6
    odd = FSDP2Strategy(tensor_parallel_size=5)
    odd.parallel_devices, odd.num_nodes = [torch.device("cpu")] * 4, 3
    with pytest.raises(ValueError, match="tensor_parallel_size=5 does not divide the world size 12"):
        odd.setup_environment()


@pytest.mark.integration
def test_fsdp_recipe_trains_on_a_node_of_any_size(tmp_path):
    """``recipes/scale/fsdp.yaml`` on one process (it used to ask for 8 ranks)."""
    command = [sys.executable, "-m", "vlmkit", "fit", "--config", "recipes/quickstart.yaml"]
    command += ["--config", "recipes/scale/fsdp.yaml", "--trainer.accelerator=cpu", "--trainer.max_steps=2"]
    command += ["--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.logger=false"]
    command += ["--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"]
    command += ["--data.init_args.num_train=8", "--data.init_args.num_val=4", "--data.init_args.batch_size=4"]
    command += ["--model.sharding.init_args.param_dtype=null"]  # bf16 matmuls crawl on CPU
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "`Trainer.fit` stopped: `max_steps=2` reached" in result.stdout + result.stderr
