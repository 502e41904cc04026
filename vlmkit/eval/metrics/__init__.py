"""Benchmark metrics as ``torchmetrics.Metric``s, synced across ranks (paper appendix A.3).

Each metric takes ``update(predictions, references)`` with generated strings and, per sample, its reference
strings (multiple choice adds ``choices``); ``compute()`` returns a float64 scalar tensor.
"""

from vlmkit.eval.metrics.anls import ANLS, anls_score, levenshtein
from vlmkit.eval.metrics.captioning import BLEU4, CIDErD, cider_d
from vlmkit.eval.metrics.exact_match import ExactMatch
from vlmkit.eval.metrics.multiple_choice import MultipleChoiceAccuracy, extract_choice
from vlmkit.eval.metrics.ptb_tokenizer import ptb_tokenize, ptb_tokenize_lines
from vlmkit.eval.metrics.vqa import VQAAccuracy, normalize_vqa_answer, vqa_accuracy

__all__ = [
    "ANLS",
    "BLEU4",
    "CIDErD",
    "ExactMatch",
    "MultipleChoiceAccuracy",
    "VQAAccuracy",
    "anls_score",
    "cider_d",
    "extract_choice",
    "levenshtein",
    "normalize_vqa_answer",
    "ptb_tokenize",
    "ptb_tokenize_lines",
    "vqa_accuracy",
]
