"""Interoperability with checkpoints of other libraries (transformers Idefics2)."""

from vlmkit.interop.idefics2 import export_idefics2, import_idefics2
from vlmkit.interop.idefics2_config import idefics2_config, idefics2_skeleton
from vlmkit.interop.idefics2_processing import IDEFICS2_CHAT_TEMPLATE, Idefics2ProcessorSettings, from_idefics2_inputs

__all__ = [
    "IDEFICS2_CHAT_TEMPLATE",
    "Idefics2ProcessorSettings",
    "export_idefics2",
    "from_idefics2_inputs",
    "idefics2_config",
    "idefics2_skeleton",
    "import_idefics2",
]
