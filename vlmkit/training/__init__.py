"""The training system: the LightningModule, schedules and parameter groups."""

from vlmkit.training.divergence import DivergenceError, DivergenceGuard
from vlmkit.training.generation_samples import GenerationSamples
from vlmkit.training.grad_norms import PartGradNorms
from vlmkit.training.loss_spikes import LossSpikeMarkers
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
    "GenerationSamples",
    "LossSpikeMarkers",
    "PartGradNorms",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "VLMModule",
    "WarmupCosineSchedule",
]
