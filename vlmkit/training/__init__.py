"""The training system: the LightningModule, schedules and parameter groups."""

from vlmkit.training.divergence import DivergenceError, DivergenceGuard
from vlmkit.training.module import VLMModule
from vlmkit.training.prediction_writer import PredictionWriter
from vlmkit.training.preemption import PreemptionCheckpoint
from vlmkit.training.schedules import WarmupCosineSchedule
from vlmkit.training.sharding import FullyShard
from vlmkit.training.strategy import FSDP2Strategy

__all__ = [
    "DivergenceError",
    "DivergenceGuard",
    "FSDP2Strategy",
    "FullyShard",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "VLMModule",
    "WarmupCosineSchedule",
]
