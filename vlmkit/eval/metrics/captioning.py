"""COCO caption metrics: CIDEr-D and BLEU-4, numerically equal to pycocoevalcap's scorers.

The raw captions are gathered across ranks as strings and tokenized in ``compute`` the way pycocoevalcap does
(default: :func:`~vlmkit.eval.metrics.ptb_tokenizer.ptb_tokenize_lines`, its Java PTB tokenizer without Java):
all references as one text and all candidates as another, in update order, so that the few PTB rules that
look past a caption's end see the same next caption as in pycocoevalcap's run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

from vlmkit.eval.metrics._common import decode_records, encode_records, reference_lists
from vlmkit.eval.metrics.ptb_tokenizer import ptb_tokenize_lines

__all__ = ["BLEU4", "CIDErD", "cider_d"]

Tokenizer = Literal["ptb", "whitespace"]
_TOKENIZERS: dict[str, Callable[[Sequence[str]], list[list[str]]]] = {
    "ptb": ptb_tokenize_lines,
    "whitespace": lambda texts: [text.split() for text in texts],
}
_MAX_N = 4


def _check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in _TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {sorted(_TOKENIZERS)}, got {tokenizer!r}")


def _tokenized_corpus(records: list[list[str]], tokenizer: str) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Tokens of each image's candidate and references, tokenized as pycocoevalcap's two Java runs.

    Like pycocoevalcap's scorers (``" ".join(tokens).split()``), a PTB token holding a no-break space
    (``3 1/2``, a phone number) counts as several words.
    """

    def tokenize(texts: list[str]) -> list[list[str]]:
        return [" ".join(tokens).split() for tokens in _TOKENIZERS[tokenizer](texts)]

    candidates = tokenize([record[0] for record in records])
    flat_references = iter(tokenize([ref for record in records for ref in record[1:]]))
    references = [[next(flat_references) for _ in record[1:]] for record in records]
    return candidates, references


def _add_corpus_state(metric: Metric, tokenizer: str) -> None:
    """The list state of raw captions (strings as byte tensors, gathered across ranks) and the tokenizer."""
    _check_tokenizer(tokenizer)
    metric.tokenizer = tokenizer
    metric.add_state("corpus", default=[], dist_reduce_fx="cat")


def _add_captions(self: Metric, predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> None:
    """Add captioned images (the ``update`` of the caption metrics).

    Args:
        self: The metric.
        predictions: One generated caption per image.
        references: The reference captions of each image.
    """
    records = [[pred, *refs] for pred, refs in zip(predictions, reference_lists(predictions, references))]
    self.corpus.append(encode_records(records, dtype=self.dtype, device=self.device))


def _corpus_tokens(metric: Metric) -> tuple[list[list[str]], list[list[list[str]]]] | None:
    """Tokens of every candidate and its references over all ranks, in update order; ``None`` before any update."""
    records = decode_records(metric.corpus)
    return _tokenized_corpus(records, metric.tokenizer) if records else None


def _ngram_counts(tokens: Sequence[str], n: int = _MAX_N) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def cider_d(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], sigma: float = 6.0
) -> list[float]:
    """CIDEr-D of each candidate, with document frequencies over all ``references`` (the corpus).

    Vedantam et al., 2015, "CIDEr: Consensus-based Image Description Evaluation", as implemented by
    pycocoevalcap's ``CiderScorer``: TF-IDF vectors of 1- to 4-grams with ``idf = log(#images) -
    log(max(1, df))``; per n, the candidate's weights are clipped by the reference's and the cosine is
    scaled by ``exp(-delta**2 / (2 sigma**2))``, with ``delta`` the difference in bigram counts (the
    reference code's "length"); the mean over n and references, times 10.

    Args:
        candidates: Tokens of each image's candidate caption.
        references: Tokens of each image's reference captions.
        sigma: Width of the Gaussian length penalty.

    Returns:
        The score of each image (the corpus CIDEr-D is their mean).
    """
    ref_counts = [[_ngram_counts(ref) for ref in refs] for refs in references]
    doc_freq: Counter[tuple[str, ...]] = Counter(ng for refs in ref_counts for ng in set().union(*refs))
    log_docs = math.log(float(len(references)))

    def vectorize(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(_MAX_N)]
        norm = [0.0] * _MAX_N
        length = 0
        for ngram, tf in counts.items():
            k = len(ngram) - 1
            vec[k][ngram] = weight = float(tf) * (log_docs - math.log(max(1.0, doc_freq[ngram])))
            norm[k] += weight**2
            if k == 1:  # the reference code's "length" counts bigrams, not words
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for candidate, refs in zip(candidates, ref_counts):
        vec, norm, length = vectorize(_ngram_counts(candidate))
        total = [0.0] * _MAX_N
        for ref in refs:
            vec_ref, norm_ref, length_ref = vectorize(ref)
            penalty = math.e ** (-(float(length - length_ref) ** 2) / (2 * sigma**2))
            for k in range(_MAX_N):
                value = sum(min(w, vec_ref[k].get(ng, 0.0)) * vec_ref[k].get(ng, 0.0) for ng, w in vec[k].items())
                if norm[k] != 0 and norm_ref[k] != 0:
                    value /= norm[k] * norm_ref[k]
                total[k] += value * penalty
        scores.append(sum(total) / _MAX_N / len(refs) * 10.0)
    return scores


class CIDErD(Metric):
    """Corpus CIDEr-D of generated captions (COCO, NoCaps, Flickr30k; Vedantam et al., 2015).

    Equal to pycocoevalcap's ``PTBTokenizer`` + ``Cider().compute_score`` on the images in update order
    (same 0-10 scale, not a percentage). Each update is one or more images, each with its own references; do
    not feed an image twice (DDP samplers that pad by repeating samples change the document frequencies
    slightly).

    Args:
        sigma: Width of the Gaussian length penalty (6 in CIDEr-D).
        tokenizer: ``ptb`` (COCO's tokenization, :func:`~vlmkit.eval.metrics.ptb_tokenizer.ptb_tokenize_lines`)
            or ``whitespace`` for captions that are already tokenized.
        **kwargs: Passed to ``torchmetrics.Metric``.

    Example:
        >>> metric = CIDErD()
        >>> metric.update(["A dog runs."], [["A dog is running.", "A brown dog runs on grass."]])
        >>> metric.update(["A cat sleeps."], [["A cat is sleeping.", "A cat asleep on a bed."]])
        >>> round(float(metric.compute()), 4)
        2.0837
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, sigma: float = 6.0, tokenizer: Tokenizer = "ptb", **kwargs) -> None:
        super().__init__(**kwargs)
        self.sigma = sigma
        _add_corpus_state(self, tokenizer)

    update = _add_captions

    def compute(self) -> Tensor:
        """The mean CIDEr-D over images (0 before any update), float64."""
        corpus = _corpus_tokens(self)
        scores = cider_d(*corpus, self.sigma) if corpus else [0.0]
        return torch.tensor(sum(scores) / len(scores), dtype=torch.float64)


class BLEU4(Metric):
    """Corpus BLEU-4 as pycocoevalcap's ``Bleu(4)`` (Papineni et al., 2002, "BLEU"; Chen et al., 2015).

    Clipped n-gram precisions and the brevity penalty are computed from counts summed over the corpus;
    the reference length of each caption is the "closest" one (ties to the shorter); no smoothing beyond
    pycocoevalcap's ``1e-15``/``1e-9`` guards. Scale 0-1, like pycocoevalcap; equal to its ``PTBTokenizer`` +
    ``Bleu(4)`` on the images in update order.

    Args:
        tokenizer: ``ptb`` (COCO's tokenization) or ``whitespace`` for captions that are already tokenized.
        **kwargs: Passed to ``torchmetrics.Metric``.

    Example:
        >>> metric = BLEU4()
        >>> metric.update(["a dog runs on the grass"], [["a dog runs on the grass", "a dog on grass"]])
        >>> round(float(metric.compute()), 6)
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tokenizer: Tokenizer = "ptb", **kwargs) -> None:
        super().__init__(**kwargs)
        _add_corpus_state(self, tokenizer)

    update = _add_captions

    def compute(self) -> Tensor:
        """Corpus BLEU-4 in ``[0, 1]`` (0 before any update), float64."""
        corpus = _corpus_tokens(self)
        if corpus is None:
            return torch.tensor(0.0, dtype=torch.float64)
        hyp_len = ref_len = 0
        guess, correct = [0] * _MAX_N, [0] * _MAX_N
        for hyp, refs in zip(*corpus):
            max_ref: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                max_ref |= _ngram_counts(ref)  # element-wise max
            for ngram, count in _ngram_counts(hyp).items():
                correct[len(ngram) - 1] += min(max_ref[ngram], count)
            for k in range(_MAX_N):
                guess[k] += max(0, len(hyp) - k)
            hyp_len += len(hyp)
            ref_len += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1]
        tiny, small = 1e-15, 1e-9  # pycocoevalcap's guards against 0/0
        bleu = 1.0
        for k in range(_MAX_N):
            bleu *= float(correct[k] + tiny) / (guess[k] + small)
        score = bleu ** (1.0 / _MAX_N)
        ratio = (hyp_len + tiny) / (ref_len + small)
        if ratio < 1:
            score *= math.exp(1 - 1 / ratio)
        return torch.tensor(score, dtype=torch.float64)
