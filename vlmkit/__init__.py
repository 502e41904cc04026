"""vlmkit: build, train and evaluate vision-language models from swappable parts.

Importing ``vlmkit`` is cheap: the top-level names below are loaded on first use.
The parts live in ``vlmkit.vision``, ``vlmkit.connectors``, ``vlmkit.fusion`` and
``vlmkit.llm``; the composed model in ``vlmkit.model``; the training system in
``vlmkit.training``; data in ``vlmkit.data``.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "VisionLanguageModel": "vlmkit.model",
    "VLMModule": "vlmkit.training.module",
    "VLMProcessor": "vlmkit.data.processor",
    "SyntheticVQADataModule": "vlmkit.data.synthetic_datamodule",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlmkit' has no attribute {name!r}")
