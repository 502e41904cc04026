"""Cross-attention fusion on 2 CPU processes (gloo): FSDP2 trains like DDP and generates like a single process.

The worker runs under ``torchrun --standalone`` in a subprocess with a timeout (see
``tests/training/test_distributed.py`` for why not under pytest itself).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("cross_attention_worker.py")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("cross_attention_distributed")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER)]
    result = subprocess.run(
        [*command, str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=WORKER.parents[2],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_fsdp2_trains_cross_attention_like_ddp(runs):
    fsdp = [torch.load(runs / f"fsdp_weights_rank{rank}.pt") for rank in (0, 1)]
    ddp = torch.load(runs / "ddp_weights_rank0.pt")
    assert _max_diff(fsdp[0], fsdp[1]) == 0.0
    assert _max_diff(fsdp[0], ddp) < 1e-5
    assert any(k.startswith("fusion.blocks.") for k in ddp)
    for rank in (0, 1):
        losses = json.loads((runs / f"fsdp_losses_rank{rank}.json").read_text())
        ddp_losses = json.loads((runs / f"ddp_losses_rank{rank}.json").read_text())
        assert len(losses) == 3 and losses == pytest.approx(ddp_losses, abs=1e-5)


@pytest.mark.parametrize("rank", [0, 1])
def test_fsdp2_cached_generation_equals_a_single_process(runs, rank):
    sys.path.insert(0, str(WORKER.parent))
    from cross_attention_worker import build_vlm

    vlm = build_vlm().eval()
    vlm.load_state_dict(torch.load(runs / "fsdp_weights_rank0.pt"))
    saved = torch.load(runs / f"fsdp_generation_rank{rank}.pt")
    batch = saved["batch"]
    assert not (batch["input_ids"][0] == vlm.image_token_id).any()  # a text-only row beside an image row
    expected = vlm.generate(
        batch["input_ids"],
        batch["attention_mask"],
        batch["pixel_values"],
        batch["patch_mask"],
        max_new_tokens=4,
        stop_token_ids=[],
    )
    assert saved["generated"].shape == (2, 4) and torch.equal(saved["generated"], expected)
