"""vlmkit: build, train and evaluate vision-language models from swappable parts.

Importing ``vlmkit`` is cheap; the parts live in ``vlmkit.vision``,
``vlmkit.connectors``, ``vlmkit.fusion``, ``vlmkit.llm``, and the model and
training system in ``vlmkit.model`` and ``vlmkit.training``.
"""

__version__ = "0.1.0"
