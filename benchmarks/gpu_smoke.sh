#!/usr/bin/env bash
# GPU smoke run for a machine with one or more CUDA GPUs (about 10 minutes on one GPU):
#   1. every test marked `gpu` (tests/gpu/ and the gpu tests elsewhere): DDP / FSDP2 / FSDP1 in bf16 agree (on all
#      visible GPUs; the multi-rank comparison needs >= 2), FSDP2 sharded checkpoint save/resume on NCCL, QLoRA
#      forward/backward/merge, packed images under flash-attention vs sdpa (needs the `gpu` extra), sync audit;
#   2. benchmarks/gpu_smoke.py: quickstart steps/s on the GPU (fp32 and bf16-mixed), synchronisations by call site,
#      and a summary table -> benchmarks/results/gpu_smoke.{json,md}.
#
#   bash benchmarks/gpu_smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p benchmarks/results
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: nothing to smoke-test')" || exit 1
python -m pytest -m gpu tests -q -rA -p no:cacheprovider --junitxml=benchmarks/results/gpu_smoke_junit.xml
tests_status=$?
python benchmarks/gpu_smoke.py --junit benchmarks/results/gpu_smoke_junit.xml "$@"
bench_status=$?
exit $(( tests_status != 0 ? tests_status : bench_status ))
