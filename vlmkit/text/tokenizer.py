"""Tokenizers for VLMs: any transformers tokenizer plus Idefics2's image tokens.

The special tokens follow Idefics2: an image becomes ``<fake_token_around_image>``
+ N x ``<image>`` + ``<fake_token_around_image>``, and every chat turn ends with
``<end_of_utterance>``. A small byte-level BPE tokenizer, trained deterministically
on the synthetic tasks' vocabulary, stands in for a real LLM's tokenizer offline.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IMAGE_TOKEN = "<image>"
"""Placeholder for one visual token (fully autoregressive) or one image (cross-attention)."""
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
"""Marks the start and end of an image's block of placeholders (Idefics2)."""
END_OF_UTTERANCE_TOKEN = "<end_of_utterance>"
"""Ends every chat turn; a stop token for generation (paper appendix A.3.1)."""
SYNTHETIC_TOKENIZER = "synthetic"
"""Name that selects the built-in offline tokenizer instead of a path or hub name."""

VLM_SPECIAL_TOKENS = (FAKE_IMAGE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE_TOKEN)


def build_synthetic_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE tokenizer on the synthetic tasks' vocabulary.

    Training is deterministic: the same corpus and ``vocab_size`` always give the
    same merges and ids, so checkpoints stay valid across runs. Byte-level BPE can
    encode any text (no unknown tokens), while every word of the synthetic tasks
    gets merged into few tokens.

    Args:
        vocab_size: Target vocabulary size, special tokens included.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<s>``, ``</s>``, ``<unk>`` and ``<pad>``
        (without the image tokens; :func:`load_tokenizer` adds them).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from vlmkit.text.synthetic_vocabulary import vocabulary_corpus

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The chat prefixes are repeated so that BPE merges them into whole tokens.
    prefixes = ["User:", "Assistant:", "System:", "Question:", "Answer:"]
    corpus = prefixes * 64 + vocabulary_corpus() * 4
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


@lru_cache(maxsize=1)
def _synthetic_tokenizer_json() -> str:
    return build_synthetic_tokenizer().backend_tokenizer.to_str()


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer and give it the VLM special tokens.

    Args:
        name_or_path: ``"synthetic"`` for the built-in offline tokenizer, else a local
            directory or hub name understood by ``AutoTokenizer.from_pretrained``.

    Returns:
        A fresh tokenizer object with :data:`VLM_SPECIAL_TOKENS` and a pad token.
    """
    if name_or_path == SYNTHETIC_TOKENIZER:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(_synthetic_tokenizer_json()),
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
        )
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    return add_vlm_special_tokens(tokenizer)


def add_vlm_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Add Idefics2's image and end-of-utterance tokens (idempotent) and a pad token.

    A tokenizer without a pad token (Llama, Mistral) pads with ``<unk>`` when it has
    one, as Idefics2 does, else with its EOS token.
    """
    missing = [t for t in VLM_SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer
