"""Interoperability with checkpoints of other libraries (transformers Idefics2, Idefics3 and SmolVLM)."""

from vlmkit.interop.idefics2 import export_idefics2, import_idefics2
from vlmkit.interop.idefics2_config import idefics2_config, idefics2_skeleton
from vlmkit.interop.idefics2_processing import IDEFICS2_CHAT_TEMPLATE, Idefics2ProcessorSettings, from_idefics2_inputs
from vlmkit.interop.idefics3 import export_idefics3, import_idefics3
from vlmkit.interop.idefics3_config import idefics3_config, idefics3_skeleton
from vlmkit.interop.idefics3_processing import (
    IDEFICS3_CHAT_TEMPLATE,
    SMOLVLM_CHAT_TEMPLATE,
    Idefics3ProcessorSettings,
    from_idefics3_inputs,
)

__all__ = [
    "IDEFICS2_CHAT_TEMPLATE",
    "IDEFICS3_CHAT_TEMPLATE",
    "SMOLVLM_CHAT_TEMPLATE",
    "Idefics2ProcessorSettings",
    "Idefics3ProcessorSettings",
    "export_idefics2",
    "export_idefics3",
    "from_idefics2_inputs",
    "from_idefics3_inputs",
    "idefics2_config",
    "idefics2_skeleton",
    "idefics3_config",
    "idefics3_skeleton",
    "import_idefics2",
    "import_idefics3",
]
