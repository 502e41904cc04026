"""The training system: the LightningModule, schedules and parameter groups."""

from vlmkit.training.callbacks import PredictionWriter
from vlmkit.training.divergence import DivergenceError, DivergenceGuard
from vlmkit.training.module import VLMModule
from vlmkit.training.preemption import PreemptionCheckpoint
from vlmkit.training.schedules import WarmupCosineSchedule
from vlmkit.training.sharding import FullyShard

__all__ = [
    "DivergenceError",
    "DivergenceGuard",
    "FullyShard",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "VLMModule",
    "WarmupCosineSchedule",
]
