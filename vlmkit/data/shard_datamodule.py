"""Deprecated: ``vlmkit.data.shard_datamodule`` is now ``vlmkit.data.mixture_datamodule``."""

from vlmkit.data.mixture_datamodule import ConsumedStateLoader, DataResumeError, MixtureDataModule, saved_num_workers
from vlmkit.deprecation import warn_deprecated

__all__ = ["ConsumedStateLoader", "DataResumeError", "MixtureDataModule", "saved_num_workers"]

warn_deprecated("vlmkit.data.shard_datamodule is now vlmkit.data.mixture_datamodule", stacklevel=2)
