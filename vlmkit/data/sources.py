"""Deprecated: ``vlmkit.data.sources`` is now ``vlmkit.data.synthetic_sources``."""

from vlmkit.data.synthetic_sources import SyntheticSource, synthetic_record, write_synthetic_jsonl
from vlmkit.deprecation import warn_deprecated

__all__ = ["SyntheticSource", "synthetic_record", "write_synthetic_jsonl"]

warn_deprecated("vlmkit.data.sources is now vlmkit.data.synthetic_sources", stacklevel=2)
