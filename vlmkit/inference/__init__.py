"""Use a trained model: load it from any of its forms, ask it about images, chat with it.

:func:`load_trained` reads a Lightning checkpoint, a ``save_pretrained`` or ``vlmkit export`` folder, or a transformers
Idefics2/Idefics3 folder; :class:`VLMPipeline` answers a prompt about images in one call (``vlmkit generate``);
:class:`ChatSession` keeps a multi-turn conversation (``vlmkit chat``).
"""

from vlmkit.inference.pipeline import ChatSession, Generation, TextStreamer, VLMPipeline
from vlmkit.inference.trained import TrainedModel, load_trained

__all__ = ["ChatSession", "Generation", "TextStreamer", "TrainedModel", "VLMPipeline", "load_trained"]
