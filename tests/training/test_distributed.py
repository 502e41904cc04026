"""2-process runs on CPU (gloo): DDP, FSDP2 and hybrid-sharded FSDP2 agree, and sharded checkpoints resume;
under FSDP2, generation, validation metrics, predictions, bf16/NF4 dtypes and preemption saves are right.

The worker runs under ``torchrun --standalone`` in a subprocess with a timeout: under pytest,
Lightning's own DDP launcher would re-run the whole pytest command in its children.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_SIGLIP, build_tiny_vlm

from vlmkit.training.checkpoints import frozen_state_keys, load_model_weights

WORKER = Path(__file__).with_name("distributed_worker.py")
pytestmark = pytest.mark.integration


def _launch(out: Path, *args: str) -> Path:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, str(WORKER), str(out), *args],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=WORKER.parents[2],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_lm_path):
    return _launch(tmp_path_factory.mktemp("distributed"), tiny_lm_path)


@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory, tiny_lm_path):
    """The ``--eval`` scenarios (one launch, about 45 s; a hang fails after the gloo timeout of 90 s)."""
    return _launch(tmp_path_factory.mktemp("distributed_eval"), tiny_lm_path, "--eval")


@pytest.fixture(scope="module")
def worker():
    """The worker module, for its builders: the single-process references use the same model and data."""
    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _weights(out, name):
    return [torch.load(out / f"{name}_weights_rank{rank}.pt") for rank in (0, 1)]


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_ddp_ranks_end_identical_and_only_trainable_parts_moved(runs):
    rank0, rank1 = _weights(runs, "ddp")
    assert _max_diff(rank0, rank1) == 0.0
    init = build_tiny_vlm(train_vision_encoder="frozen", train_language_model="full").state_dict()
    encoder = [k for k in init if k.startswith("vision_encoder.")]
    assert encoder and all(torch.equal(rank0[k], init[k]) for k in encoder)  # frozen
    assert not torch.equal(rank0["connector.latents"], init["connector.latents"])
    lm = [k for k in init if k.startswith("language_model.") and "layers.0" in k]
    assert all(not torch.equal(rank0[k], init[k]) for k in lm if k.endswith("weight"))


@pytest.mark.parametrize("name", ["fsdp", "hsdp"])
def test_fsdp2_full_weights_identical_across_ranks_and_equal_ddp(runs, name):
    rank0, rank1 = _weights(runs, name)
    assert _max_diff(rank0, rank1) == 0.0
    ddp = _weights(runs, "ddp")[0]
    assert _max_diff(rank0, ddp) < 1e-5  # same data per rank, same global batch: same training
    losses = [json.loads((runs / f"{name}_losses_rank{r}.json").read_text()) for r in (0, 1)]
    ddp_losses = [json.loads((runs / f"ddp_losses_rank{r}.json").read_text()) for r in (0, 1)]
    assert losses[0] != losses[1]  # the ranks saw different batches
    for ours, theirs in zip(losses, ddp_losses):
        assert ours == pytest.approx(theirs, abs=1e-5)


@pytest.mark.parametrize("name", ["fsdp", "hsdp"])
def test_per_part_gradient_norms_of_sharded_gradients_equal_ddps(runs, name):
    """``PartGradNorms`` reduces each part's squared norm over the shards only (HSDP: not over the replicas)."""
    reference = json.loads((runs / "ddp_grad_norms_rank0.json").read_text())
    assert set(reference[0]) == {"connector", "language_model", "total"}  # the encoder is frozen here
    for rank in (0, 1):
        norms = json.loads((runs / f"{name}_grad_norms_rank{rank}.json").read_text())
        assert len(norms) == len(reference)
        for got, expected in zip(norms, reference):
            assert got.keys() == expected.keys()
            for part in expected:
                assert abs(got[part] - expected[part]) <= 1e-4 * max(1.0, expected[part]), (name, rank, part)


def test_sharded_checkpoint_resumes_to_the_same_weights(runs):
    checkpoint = runs / "fsdp_ckpt" / "epoch=0-step=2.ckpt"
    assert checkpoint.is_dir() and len(list(checkpoint.glob("*.distcp"))) == 2  # one shard per rank
    resumed, one_go = _weights(runs, "fsdp_resumed")[0], _weights(runs, "fsdp")[0]
    assert _max_diff(resumed, one_go) < 1e-6
    resumed_losses = json.loads((runs / "fsdp_resumed_losses_rank0.json").read_text())
    one_go_losses = json.loads((runs / "fsdp_losses_rank0.json").read_text())
    assert sorted(resumed_losses) == ["3", "4"]
    assert resumed_losses == pytest.approx({k: one_go_losses[k] for k in ("3", "4")}, abs=1e-6)


def test_sharded_checkpoint_consolidates_to_one_file_and_initialises_a_model(runs, tmp_path):
    sharded = runs / "fsdp_ckpt" / "epoch=1-step=4.ckpt"
    single = tmp_path / "consolidated.ckpt"
    consolidate = [sys.executable, "-m", "lightning.fabric.utilities.consolidate_checkpoint", str(sharded)]
    subprocess.run([*consolidate, "--output_file", str(single)], check=True, timeout=120)
    checkpoint = torch.load(single, weights_only=False)
    final = _weights(runs, "fsdp")[0]
    assert checkpoint["global_step"] == 4 and "optimizer_0" in checkpoint
    state = {k.removeprefix("vlm."): v for k, v in checkpoint["state_dict"].items()}
    assert _max_diff(state, final) == 0.0
    for source in (single, sharded):  # init_from reads both layouts
        vlm = build_tiny_vlm(train_vision_encoder="frozen", train_language_model="full")
        assert load_model_weights(vlm, source) == []
        assert _max_diff(vlm.state_dict(), final) == 0.0


def test_divergence_guard_rolls_every_rank_back_under_fsdp2(runs):
    for rank in (0, 1):  # the NaN was on rank 1 only; both ranks reloaded the sharded step-2 checkpoint
        rollbacks, events = json.loads((runs / f"fsdp_rollback_guard_rank{rank}.json").read_text())
        assert rollbacks == 1 and events == ["rank 1: loss is nan at step 3"]
    rank0, rank1 = _weights(runs, "fsdp_rollback")
    assert _max_diff(rank0, rank1) == 0.0 and all(torch.isfinite(v).all() for v in rank0.values())
    assert _max_diff(rank0, _weights(runs, "fsdp")[0]) > 1e-4  # it skipped step 3's batches: a different run


def test_fsdp2_with_lora_trains_only_adapters_and_new_rows_and_equals_ddp(runs):
    rank0, rank1 = _weights(runs, "fsdp_lora")
    assert _max_diff(rank0, rank1) == 0.0
    assert _max_diff(rank0, _weights(runs, "ddp_lora")[0]) < 1e-5
    from vlmkit.adapters import LoRA

    vlm = build_tiny_vlm(train_vision_encoder="frozen", train_language_model=LoRA(rank=4, alpha=8))
    init = vlm.state_dict()
    assert rank0.keys() == init.keys()
    moved = {k for k in init if not torch.equal(rank0[k], init[k])}
    assert any("lora_B" in k for k in moved) and any(k.startswith("connector.") for k in moved)
    assert not moved & frozen_state_keys(vlm)  # frozen base weights (and the frozen encoder) never move


def test_fsdp2_with_qlora_equals_ddp_and_keeps_4bit_weights(runs, tiny_lm_path):
    from vlmkit.adapters import LoRA
    from vlmkit.connectors import MLPProjection
    from vlmkit.llm import TransformersCausalLM
    from vlmkit.model import VisionLanguageModel
    from vlmkit.vision import TransformersVisionEncoder

    rank0, rank1 = _weights(runs, "fsdp_qlora")
    assert _max_diff(rank0, rank1) == 0.0
    ddp = _weights(runs, "ddp_qlora")[0]
    # FSDP2's state dict leaves out bitsandbytes' quantization states (absmax, quant_map, ...): the 4-bit
    # model is rebuilt from its base checkpoint, so only adapters and trainable parts need saving
    extras = set(ddp) - set(rank0)
    assert extras and all(".base_layer.weight." in k for k in extras) and not set(rank0) - set(ddp)
    assert _max_diff(rank0, {k: ddp[k] for k in rank0}) < 1e-5
    torch.manual_seed(0)
    lm = TransformersCausalLM(tiny_lm_path, tokenizer="synthetic", quantization="nf4", compute_dtype="float32")
    init = VisionLanguageModel(
        TransformersVisionEncoder(config=TINY_SIGLIP), MLPProjection, lm, train_language_model=LoRA(rank=4, alpha=8)
    ).state_dict()
    packed = [k for k in init if k.endswith("base_layer.weight") and init[k].dtype == torch.uint8]
    assert packed and all(torch.equal(rank0[k], init[k].float()) for k in packed)  # 4-bit weights untouched
    assert any(not torch.equal(rank0[k], init[k].float()) for k in rank0 if "lora_B" in k)


def _ranks(out, name):
    return [json.loads((out / f"{name}_rank{rank}.json").read_text()) for rank in (0, 1)]


def test_sharded_generation_steps_in_lockstep_until_every_rank_is_done(eval_runs, worker):
    free = build_tiny_vlm().eval().generate(torch.tensor(worker.PROMPT), max_new_tokens=6, stop_token_ids=[])
    reference = free.tolist()
    for lag in ("0", "1"):  # the host reading the device at once (CPU) or one step late (CUDA)
        rank0, rank1 = (results[lag] for results in _ranks(eval_runs, "generate"))
        assert rank0[0] == [reference[0][:1]]  # rank 0 was done after its first token ...
        assert rank1[0] == reference  # ... while rank 1 decoded all 6 tokens with the same sharded weights
        assert rank0[1] == rank1[1] == reference  # the next call pairs the same collectives: same tokens


def _approx(values: dict) -> dict:
    return {key: pytest.approx(value, rel=1e-5, abs=1e-6) for key, value in values.items()}


def test_per_task_validation_metrics_over_two_ranks_equal_one_process(eval_runs, worker, tmp_path):
    # rank 0 saw only colour questions and rank 1 only shape questions (plus a padding row)
    two = [results["tasks"][0] for results in _ranks(eval_runs, "validate")]
    one = worker.evaluation_trainer(1, tmp_path).validate(
        worker.eval_module(worker.ColorOracle), worker.task_data(), verbose=False
    )[0]
    assert two[0]["val/accuracy_color"] == 1.0 and two[0]["val/accuracy_shape"] == 0.0
    assert two[0]["val/accuracy"] == pytest.approx(4 / 7)  # 4 colour questions of 7, none counted twice
    assert two[0] == two[1] == _approx(one)


def test_mixture_validation_runs_even_steps_and_equals_one_process(eval_runs, worker, tmp_path):
    for n in (5, 1):  # rank 0 reads 3 and 1 samples, rank 1 reads 2 and none
        two = [results[f"mixture{n}"][0] for results in _ranks(eval_runs, "validate")]
        one = worker.evaluation_trainer(1, tmp_path).validate(
            worker.eval_module(), worker.mixture_data(n), verbose=False
        )
        assert set(two[0]) == {"val/loss", "val/accuracy"} and math.isfinite(two[0]["val/loss"])
        assert two[0] == two[1] == _approx(one[0])


def test_generation_based_evaluation_over_two_ranks_equals_one_process(eval_runs, worker, tmp_path):
    two = [results["generation"][0] for results in _ranks(eval_runs, "validate")]
    tasks = worker.generation_tasks()
    one = worker.evaluation_trainer(1, tmp_path).validate(
        worker.eval_module(evaluator=tasks.evaluator), tasks, verbose=False
    )
    assert two[0] == two[1] == one[0] and two[0]["val/synthetic"] // 1e6 == 5  # the same 5 answers, each once


def test_predictions_of_every_rank_are_written_once_in_dataset_order(eval_runs, worker, tmp_path):
    lines = (eval_runs / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["sample_index"] for r in records] == [0, 1, 2, 3, 4]  # 5 prompts: 3 on rank 0, 2 + padding on rank 1
    writer = worker.PredictionWriter(output_file=str(tmp_path / "single.jsonl"))
    trainer = worker.evaluation_trainer(1, tmp_path, callbacks=[writer])
    trainer.predict(worker.eval_module(), worker.task_data(), return_predictions=False)
    single = [json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines()]
    assert records == single


@pytest.mark.parametrize("name", ["fsdp_bf16", "fsdp_qlora_bf16"])
def test_fsdp2_bf16_and_nf4_train_with_fp32_master_weights_and_bf16_compute(eval_runs, name):
    for report in _ranks(eval_runs, f"{name}_dtypes"):
        assert report["trainable"] == ["torch.float32"] and report["optimizer_state"] == ["torch.float32"]
        frozen = {"torch.bfloat16", "torch.uint8"} if "qlora" in name else {"torch.bfloat16"}
        assert set(report["frozen"]) == frozen  # frozen weights stay as loaded: bf16, 4-bit
        assert report["compute"] == {"connector_output": "torch.bfloat16", "decoder_input": "torch.bfloat16"}
    losses = _ranks(eval_runs, f"{name}_losses")
    assert all(len(rank) == 2 and all(math.isfinite(v) for v in rank.values()) for rank in losses)
    rank0, rank1 = _weights(eval_runs, name)
    assert _max_diff(rank0, rank1) == 0.0
    assert any(rank0[k].abs().max() > 0 for k in rank0 if "lora_B" in k)  # adapters (zero at init) trained


def test_preemption_signal_saves_all_ranks_at_one_step_then_requeues_and_resumes(eval_runs, runs):
    # SIGUSR1 reached rank 0 inside step 2's forward and rank 1 after its backward
    (path0, step0, stopped0), (path1, step1, stopped1) = _ranks(eval_runs, "preempted")
    assert path0 == path1 == str(eval_runs / "hpc_ckpt_1.ckpt") and step0 == step1 == stopped0 == stopped1 == 2
    assert len(list((eval_runs / "hpc_ckpt_1.ckpt").glob("*.distcp"))) == 2  # a complete sharded checkpoint
    assert (eval_runs / "scontrol_calls.txt").read_text() == "requeue 4242\n"  # rank 0 only
    resumed = _weights(eval_runs, "fsdp_preempted_resumed")[0]
    assert _max_diff(resumed, _weights(runs, "fsdp")[0]) < 1e-6  # the same run as one without interruption


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (NCCL, bf16 FSDP2, FSDP1)")
def test_gpu_ddp_fsdp2_bf16_and_fsdp1_train_alike(tmp_path):
    n = torch.cuda.device_count()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
    result = subprocess.run(
        [*command, str(WORKER), str(tmp_path), "--gpu"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    for name in ("gpu_ddp", "gpu_fsdp2"):
        weights = [torch.load(tmp_path / f"{name}_weights_rank{r}.pt") for r in range(n)]
        assert all(_max_diff(weights[0], w) == 0.0 for w in weights[1:])
    ddp = json.loads((tmp_path / "gpu_ddp_losses_rank0.json").read_text())
    for name in ("gpu_fsdp2", "gpu_fsdp1"):
        losses = json.loads((tmp_path / f"{name}_losses_rank0.json").read_text())
        assert sorted(losses) == sorted(ddp) and all(torch.isfinite(torch.tensor(list(losses.values()))))
        assert losses == pytest.approx(ddp, abs=0.05)  # bf16 compute in both: close, not equal
