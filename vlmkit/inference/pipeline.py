"""``VLMPipeline``: ask a trained model about your own images in one call; ``ChatSession`` for several turns.

The pipeline is vlmkit's own pieces in a row: the model's processor (:meth:`VLMProcessor.render`: its chat template,
vlmkit's layout or an imported checkpoint's Jinja template, and its image settings), the left-padding collator, the
model's ``generate`` (greedy, or sampled with temperature/top-p/top-k and a seed) and the tokenizer's decode. Text can
be streamed while it is generated (``on_text``).

    pipe = VLMPipeline.from_pretrained("runs/quickstart/.../last.ckpt")
    pipe("cat.png", "What colour is the shape?")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlmkit.data.collate import VLMCollator
from vlmkit.data.image_processing import ResizeMode
from vlmkit.data.processor import VLMProcessor
from vlmkit.errors import UserInputError
from vlmkit.eval.generation import decode
from vlmkit.inference.trained import TrainedModel, load_trained
from vlmkit.model import VisionLanguageModel
from vlmkit.text.template import Turn

ImageLike = str | Path | Image.Image
"""An image: a file path or a PIL image."""


class TextStreamer:
    """Turns the tokens of one generated row into text pieces as they come (for ``generate(streamer=...)``).

    A piece is passed on once it decodes to whole characters; special tokens (end of utterance, EOS) are skipped and
    the leading space of the answer dropped, so the pieces join to the decoded, stripped answer.

    Args:
        tokenizer: The model's tokenizer.
        on_text: Called with each new piece of text.
    """

    def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""

    def __call__(self, next_ids: torch.Tensor) -> None:
        """Take one step's token ``[1]``."""
        self.ids.append(int(next_ids[0]))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        if text.endswith("\ufffd") or not text.startswith(self.text):  # half a character, or a re-spaced prefix
            return
        if len(text) > len(self.text):
            self.on_text(text[len(self.text) :])
            self.text = text

    def finish(self, answer: str) -> None:
        """Pass on what of the final ``answer`` is still unsent (text held back as half a character)."""
        if answer.startswith(self.text) and len(answer) > len(self.text):
            self.on_text(answer[len(self.text) :])
            self.text = answer


@dataclass
class Generation:
    """One answer.

    Attributes:
        text: The decoded answer (special tokens skipped, cut at a stop string, stripped).
        token_ids: The generated ids ``[n]`` (a stop token included).
        prompt_ids: The prompt's ids ``[s]`` as the model saw them.
    """

    text: str
    token_ids: torch.Tensor
    prompt_ids: torch.Tensor


class VLMPipeline:
    """Load -> process -> chat template -> collate -> generate -> decode, in one call.

    Args:
        vlm: The model.
        max_image_size: Longest side images are resized to (the model's training data's setting is best).
        min_image_size: Shortest side images are brought to.
        split_images: Give every image as its crops + the whole image (5x the visual tokens; paper Finding 6).
        resize_mode: ``"preserve_aspect"`` or ``"square"``, as in training.
        chat: Render the prompt as a user turn of the chat template (instruction models); ``False``: plain text
            (base models).

    Example:
        >>> pipe = VLMPipeline.from_pretrained("exported/quickstart")  # doctest: +SKIP
        >>> pipe("shape.png", "What colour is the shape?")  # doctest: +SKIP
        'red'
    """

    def __init__(
        self,
        vlm: VisionLanguageModel,
        max_image_size: int = 980,
        min_image_size: int = 378,
        split_images: bool = False,
        resize_mode: ResizeMode = "preserve_aspect",
        chat: bool = True,
    ) -> None:
        self.vlm = vlm.eval()
        self.processor = VLMProcessor.from_model(vlm, max_image_size, min_image_size, resize_mode=resize_mode)
        self.collate = VLMCollator(vlm.tokenizer.pad_token_id, vlm.vision_encoder.patch_size, padding_side="left")
        self.split_images = split_images
        self.chat = chat
        self.trained: TrainedModel | None = None

    @classmethod
    def from_pretrained(
        cls, path: str | Path, trust_checkpoint: bool = False, device: str | None = None, **settings: Any
    ) -> VLMPipeline:
        """A pipeline over a trained model in any form :func:`~vlmkit.inference.load_trained` reads.

        The image settings are the model's training data's (or its checkpoint's); ``settings`` (the constructor's
        arguments) override them where not ``None``.
        """
        trained = load_trained(path, trust_checkpoint)
        if device is not None:
            trained.vlm.to(device)
        options = {**trained.processor, **{k: v for k, v in settings.items() if v is not None}}
        pipe = cls(trained.vlm, **options)
        pipe.trained = trained
        return pipe

    def __call__(self, images: ImageLike | Sequence[ImageLike] | None, prompt: str, **options: Any) -> str:
        """The answer to ``prompt`` about ``images`` (in that order before the text); ``options``: :meth:`generate`."""
        images = _as_list(images)
        content = [*({"type": "image"} for _ in images), prompt]
        return self.generate([Turn("user" if self.chat else "text", content)], images, **options).text

    def chat_session(self, **options: Any) -> ChatSession:
        """A multi-turn conversation; ``options`` (:meth:`generate`'s) apply to every turn."""
        return ChatSession(self, **options)

    def generate(
        self,
        turns: Sequence[Turn],
        images: Sequence[ImageLike] = (),
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        stop_strings: Sequence[str] = (),
        split_images: bool | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Generation:
        """Continue a conversation whose image segments are ``images``.

        Args:
            turns: The conversation so far (the last one the user's); a generation prompt is added in chat mode.
            images: One per image segment, in order.
            max_new_tokens: Upper bound on the answer's tokens.
            do_sample: Sample instead of greedy decoding.
            temperature: Softmax temperature when sampling.
            top_p: Nucleus mass when sampling.
            top_k: Sample among the ``top_k`` likeliest tokens; 0: all.
            seed: Seed of the sampling generator (the same seed gives the same answer); ``None``: torch's global one.
            stop_strings: Texts that end the answer (it is cut before them).
            split_images: Override the pipeline's ``split_images`` for this call.
            on_text: Called with each new piece of the answer while it is generated.

        Raises:
            UserInputError: An image file that is missing or does not decode, or a conversation the template refuses.
        """
        images = _as_list(images)
        split = self.split_images if split_images is None else split_images
        try:
            sample = self.processor(images, turns, add_generation_prompt=self.chat, split_images=split)
        except (FileNotFoundError, ValueError) as err:
            raise UserInputError(str(err)) from err
        batch = self.collate([sample])
        device = next(self.vlm.parameters()).device
        generator = None
        if do_sample and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        pixels = batch.get("pixel_values")
        streamer = TextStreamer(self.vlm.tokenizer, on_text) if on_text is not None else None
        generated = self.vlm.generate(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            pixels.to(device, _float_dtype(self.vlm)) if pixels is not None else None,
            batch["patch_mask"].to(device) if pixels is not None else None,
            max_new_tokens=max_new_tokens,
            stop_strings=stop_strings,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            generator=generator,
            streamer=streamer,
        )
        text = decode(generated, self.vlm.tokenizer, stop_strings)[0]
        if streamer is not None:
            streamer.finish(text)
        return Generation(text, generated[0].cpu(), sample["input_ids"])


class ChatSession:
    """A conversation with a model: each question is answered with the whole history (earlier images included).

    Args:
        pipeline: The pipeline that renders and answers.
        **options: :meth:`VLMPipeline.generate` options for every turn.
    """

    def __init__(self, pipeline: VLMPipeline, **options: Any) -> None:
        self.pipeline = pipeline
        self.options = options
        self.turns: list[Turn] = []
        self.images: list[ImageLike] = []
        self.last: Generation | None = None

    def ask(self, prompt: str, images: ImageLike | Sequence[ImageLike] | None = None, **options: Any) -> str:
        """Answer ``prompt`` (about the new ``images``, placed before it) after the turns so far; keep both turns."""
        new = _as_list(images)
        turn = Turn("user", [*({"type": "image"} for _ in new), prompt])
        self.last = self.pipeline.generate([*self.turns, turn], [*self.images, *new], **{**self.options, **options})
        self.turns += [turn, Turn("assistant", [self.last.text])]
        self.images += new
        return self.last.text

    def reset(self) -> None:
        """Forget the conversation (turns and images)."""
        self.turns, self.images, self.last = [], [], None


def _as_list(images: ImageLike | Sequence[ImageLike] | None) -> list[ImageLike]:
    if images is None:
        return []
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    return list(images)


def _float_dtype(module: torch.nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
