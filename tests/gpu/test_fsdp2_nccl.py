"""FSDP2 on NCCL: bf16 compute with fp32 reduction, sharded checkpoint save and exact resume (all visible GPUs)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NCCL)")]
WORKER = Path(__file__).with_name("gpu_worker.py")


def test_fsdp2_sharded_checkpoint_resumes_on_nccl(tmp_path):
    n = torch.cuda.device_count()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    result = subprocess.run(
        [*command, str(WORKER), str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=WORKER.parents[2]
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    checkpoint = next((tmp_path / "nccl_fsdp2_ckpt").glob("*-step=2.ckpt"))
    assert checkpoint.is_dir() and len(list(checkpoint.glob("*.distcp"))) == n  # one shard per rank
    one_go = torch.load(tmp_path / "nccl_fsdp2_weights_rank0.pt")
    resumed = torch.load(tmp_path / "nccl_fsdp2_resumed_weights_rank0.pt")
    assert one_go.keys() == resumed.keys()
    # bf16 compute: GPU reductions are not bit-reproducible, so the two runs agree closely, not exactly
    assert max((one_go[k] - resumed[k]).abs().max().item() for k in one_go) < 1e-3
    losses = json.loads((tmp_path / "nccl_fsdp2_losses_rank0.json").read_text())
    resumed_losses = json.loads((tmp_path / "nccl_fsdp2_resumed_losses_rank0.json").read_text())
    assert sorted(resumed_losses) == ["3", "4"]
    assert resumed_losses == pytest.approx({k: losses[k] for k in ("3", "4")}, abs=1e-2)
    for rank in range(1, n):  # every rank ends with the same full weights
        other = torch.load(tmp_path / f"nccl_fsdp2_weights_rank{rank}.pt")
        assert all(torch.equal(one_go[k], other[k]) for k in one_go)
