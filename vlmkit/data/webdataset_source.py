"""Deprecated: ``vlmkit.data.webdataset_source`` is now ``vlmkit.data.shard_source``."""

from vlmkit.data.shard_source import ShardSource, decode_sample, expand_urls, manifest_counts, manifest_format, shuffled
from vlmkit.deprecation import warn_deprecated

__all__ = ["ShardSource", "decode_sample", "expand_urls", "manifest_counts", "manifest_format", "shuffled"]

warn_deprecated("vlmkit.data.webdataset_source is now vlmkit.data.shard_source", stacklevel=2)
