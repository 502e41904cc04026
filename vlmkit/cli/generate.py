"""``vlmkit generate`` and ``vlmkit chat``: ask a trained model about your own images (:mod:`vlmkit.inference`).

    vlmkit generate --checkpoint runs/quickstart/.../last.ckpt --image shape.png --prompt "What color is the shape?"
    vlmkit chat --checkpoint exported/quickstart --image shape.png

``--checkpoint`` is a Lightning checkpoint of ``vlmkit fit``, a ``save_pretrained`` or ``vlmkit export`` folder, or a
transformers Idefics2/Idefics3 folder. The answer is printed to stdout as it is generated; loading messages go to
stderr. ``chat`` reads questions from stdin, one per line (so it can be piped): ``/image PATH`` attaches an image to
the next question, ``/reset`` forgets the conversation, ``/quit`` (or end of input) ends it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from vlmkit.errors import UserInputError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` and the image settings every command that loads a trained model takes."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a Lightning .ckpt of `vlmkit fit`, a save_pretrained or `vlmkit export` folder, "
        "or a transformers Idefics2/Idefics3/SmolVLM folder",
    )
    parser.add_argument(
        "--split_images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="give every image as its crops + the whole image (default: as the model was evaluated in training)",
    )
    parser.add_argument("--max_image_size", type=int, help="longest image side (default: the training data's)")
    parser.add_argument("--min_image_size", type=int, help="shortest image side (default: the training data's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when there is one, else cpu)")
    parser.add_argument(
        "--trust_checkpoint",
        action="store_true",
        help="unpickle a Lightning checkpoint in full (weights_only=False): runs any code it holds; only for files "
        "you trust",
    )


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max_new_tokens", type=int, default=64, help="longest answer, in tokens (default: 64)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sample")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    parser.add_argument("--top_k", type=int, default=0, help="sample among the k likeliest tokens; 0: all")
    parser.add_argument("--seed", type=int, help="seed of the sampling (the same seed gives the same answer)")
    parser.add_argument("--stop", action="append", default=[], help="a text that ends the answer (repeatable)")
    parser.add_argument("--plain", action="store_true", help="no chat template: continue the text (base models)")
    parser.add_argument("--show_prompt", action="store_true", help="print each rendered prompt to stderr")


def load_pipeline(options: argparse.Namespace, chat: bool = True) -> Any:
    """The :class:`~vlmkit.inference.VLMPipeline` of ``--checkpoint``, with the command line's image settings."""
    import torch

    from vlmkit.inference import VLMPipeline

    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return VLMPipeline.from_pretrained(
        options.checkpoint,
        trust_checkpoint=options.trust_checkpoint,
        device=device,
        max_image_size=options.max_image_size,
        min_image_size=options.min_image_size,
        split_images=options.split_images,
        chat=chat,
    )


def _generation_options(options: argparse.Namespace) -> dict[str, Any]:
    if options.temperature < 0:
        raise UserInputError(f"--temperature must be >= 0 (0: greedy), got {options.temperature}")
    sample = options.temperature > 0
    return {
        "max_new_tokens": options.max_new_tokens,
        "do_sample": sample,
        "temperature": options.temperature if sample else 1.0,
        "top_p": options.top_p,
        "top_k": options.top_k,
        "seed": options.seed,
        "stop_strings": options.stop,
    }


def _check_images(paths: Iterable[str]) -> list[str]:
    paths = list(paths)
    for path in paths:
        if not Path(path).is_file():
            raise UserInputError(f"image not found: {path}")
    return paths


def _write(text: str) -> None:
    sys.stdout.write(text)  # looked up per call: stdout may be redirected after import
    sys.stdout.flush()


def main(args: list[str] | None = None) -> str:
    """Entry point of ``vlmkit generate``: print the answer to ``--prompt`` about the ``--image`` files."""
    parser = argparse.ArgumentParser(
        prog="vlmkit generate",
        description="Ask a trained model about your own images; the answer is printed as it is generated.",
    )
    add_model_arguments(parser)
    parser.add_argument("--image", action="append", default=[], help="an image file (repeatable; in prompt order)")
    parser.add_argument("--prompt", required=True, help="the question or instruction")
    parser.add_argument("--no_stream", action="store_true", help="print the answer once it is complete")
    _add_generation_arguments(parser)
    options = parser.parse_args(args)
    images = _check_images(options.image)  # before the model is built
    generation = _generation_options(options)
    pipe = load_pipeline(options, chat=not options.plain)
    stream = None if options.no_stream else _write
    if options.show_prompt:
        from vlmkit.text.template import Turn

        turn = Turn("user" if pipe.chat else "text", [*({"type": "image"} for _ in images), options.prompt])
        sample = pipe.processor(images, [turn], add_generation_prompt=pipe.chat, split_images=pipe.split_images)
        sys.stderr.write(pipe.vlm.tokenizer.decode(sample["input_ids"]) + "\n")
    answer = pipe(images, options.prompt, on_text=stream, **generation)
    _write(("" if stream else answer) + "\n")
    return answer


def chat_main(args: list[str] | None = None, stdin: TextIO | None = None) -> None:
    """Entry point of ``vlmkit chat``: a multi-turn conversation read from stdin."""
    parser = argparse.ArgumentParser(
        prog="vlmkit chat",
        description="Chat with a trained model about images. One question per line; /image PATH attaches an image to "
        "the next question, /reset forgets the conversation, /quit (or end of input) ends it.",
    )
    add_model_arguments(parser)
    parser.add_argument("--image", action="append", default=[], help="an image for the first question (repeatable)")
    _add_generation_arguments(parser)
    options = parser.parse_args(args)
    pending = _check_images(options.image)
    generation = _generation_options(options)
    session = load_pipeline(options, chat=True).chat_session(**generation)
    stdin = stdin or sys.stdin
    interactive = stdin.isatty()
    if interactive:
        sys.stderr.write("vlmkit chat: /image PATH, /reset, /quit\n")
    while True:
        if interactive:
            sys.stderr.write("you> ")
            sys.stderr.flush()
        line = stdin.readline()
        if not line or line.strip() in ("/quit", "/exit"):
            return
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            session.reset()
            pending = []
            sys.stderr.write("(conversation reset)\n")
        elif line.startswith("/image"):
            path = line[len("/image") :].strip()
            if Path(path).is_file():
                pending.append(path)
                sys.stderr.write(f"(image {path} attached to the next question)\n")
            else:
                sys.stderr.write(f"vlmkit: error: image not found: {path}\n")
        elif line.startswith("/"):
            sys.stderr.write(f"vlmkit: error: unknown command {line.split()[0]} (use /image PATH, /reset, /quit)\n")
        else:
            try:
                session.ask(line, pending, on_text=_write)
            except UserInputError as err:
                sys.stderr.write(f"vlmkit: error: {err}\n")
                continue
            finally:
                pending = []
            _write("\n")
            if options.show_prompt and session.last is not None:
                sys.stderr.write(session.pipeline.vlm.tokenizer.decode(session.last.prompt_ids) + "\n")
