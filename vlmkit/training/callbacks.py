"""Deprecated: ``vlmkit.training.callbacks`` is now ``vlmkit.training.prediction_writer``."""

from vlmkit.deprecation import warn_deprecated
from vlmkit.training.prediction_writer import PredictionWriter

__all__ = ["PredictionWriter"]

warn_deprecated("vlmkit.training.callbacks is now vlmkit.training.prediction_writer", stacklevel=2)
