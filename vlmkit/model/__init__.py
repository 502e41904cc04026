"""The composed model: ``VisionLanguageModel`` wires a vision encoder, a connector, a fusion and a language model.

``vlmkit.model.VisionLanguageModel`` is what YAML recipes name as ``class_path``. Generation lives in
:mod:`vlmkit.model.generation` (its device-side loop helpers in :mod:`vlmkit.model.decoding`), NEFTune in
:mod:`vlmkit.model.neftune`, what an image costs in :mod:`vlmkit.model.token_budget`.
"""

from vlmkit.model.neftune import neftune
from vlmkit.model.token_budget import TokenBudget, token_budget
from vlmkit.model.vision_language_model import ConnectorFactory, VisionLanguageModel

__all__ = ["ConnectorFactory", "TokenBudget", "VisionLanguageModel", "neftune", "token_budget"]
