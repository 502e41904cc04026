"""The training system: the LightningModule, schedules and parameter groups."""

from vlmkit.training.callbacks import PredictionWriter
from vlmkit.training.module import VLMModule
from vlmkit.training.schedules import WarmupCosineSchedule

__all__ = ["PredictionWriter", "VLMModule", "WarmupCosineSchedule"]
