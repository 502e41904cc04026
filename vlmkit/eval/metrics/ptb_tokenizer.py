"""The COCO caption tokenizer without Java: a port of Stanford ``PTBLexer`` 3.4.1 + pycocoevalcap's punctuation filter.

pycocoevalcap writes all captions, one per line, to a file, runs ``edu.stanford.nlp.process.PTBTokenizer
-preserveLines -lowerCase`` (the ``stanford-corenlp-3.4.1.jar`` it ships) and drops the tokens in
:data:`PUNCTUATIONS`. This module ports the lexer's rules (``PTBLexer.flex`` at CoreNLP tag ``v3.4.1``) one by
one and runs them as JFlex does: at each position the longest match wins, trailing context (``r1/r2``) counts
towards the length, ties go to the rule listed first, and actions push characters back as the Java ones do.
Checked token for token against the jar on thousands of varied captions and on every BMP character
(``tests/eval/metrics/test_ptb_tokenizer.py``).

Differences, all outside what captions contain: line breaks other than a newline inside a caption become spaces
(Java would start a new line there, which shifts every later caption in pycocoevalcap); letters added to
Unicode after version 14 (the tables of Python 3.11, against which the jar's were measured) may be classified
differently; quoted SGML attribute values do not span lines.
"""

from __future__ import annotations

import bisect
import functools
import re
import sys
from collections.abc import Sequence

try:  # CPython's regex parser, to find the characters each rule can start with (an optimisation only)
    from re import _constants as _sre_constants
    from re import _parser as _sre_parser
except ImportError:  # Python 3.10
    import sre_constants as _sre_constants
    import sre_parse as _sre_parser

from vlmkit.eval.metrics._ptb_rules import NEWLINE, Action, lexer_rules

__all__ = ["PUNCTUATIONS", "ptb_tokenize", "ptb_tokenize_lines"]

#: Tokens pycocoevalcap removes after PTB tokenization (``tokenizer/ptbtokenizer.py``). With ``-lowerCase``,
#: PTB emits ``-lrb-``/``-rrb-``, which do not match the upper-case entries and are therefore kept.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-"] + list(".?!,:-") + ["--", "...", ";"]
)

_ASSUMED_NEXT_CAPTION = "A photo"  # what follows a caption tokenized alone (COCO captions mostly start so)
_OTHER_LINE_BREAKS = str.maketrans(dict.fromkeys("\r\x0b\x0c\u2028\u2029\n", " "))
# A run of ASCII letters before whitespace is always one token (no rule makes anything else of it), except
# the split assimilations; checking this first skips the full rule set for most caption words.
_PLAIN_WORD = re.compile(r"[A-Za-z]+(?=[ \t\n]|\Z)")
_ASSIMILATIONS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
_SPACES = re.compile(r"[ \t]+")
_MAX_CODE = sys.maxunicode
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def ptb_tokenize(text: str) -> list[str]:
    """Tokenize one caption as pycocoevalcap's ``PTBTokenizer`` + punctuation filter does.

    Stanford ``PTBTokenizer`` 3.4.1 (``-preserveLines -lowerCase``), as shipped in pycocoevalcap (Chen et
    al., 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server"): splits clitics
    (``doesn't`` -> ``does n't``), keeps numbers, times, URLs, e-mails, hyphenated words and abbreviations
    (``u.s.``, ``p.m.``) whole, splits ``12:45pm`` into ``12:45 pm``, maps brackets to ``-lrb-`` etc., then
    removes the tokens in :data:`PUNCTUATIONS`.

    pycocoevalcap tokenizes all captions as one text, and at a caption's end a few rules look into the next
    caption (a one-letter abbreviation such as ``vitamin C.`` keeps its period unless the next caption
    starts with "A", "The", "It", ...; ``no.``/``fig.`` keep theirs before a number). Here the caption is
    taken to be followed by one that starts with "A", as most COCO captions do; use
    :func:`ptb_tokenize_lines` to tokenize a list of captions exactly as pycocoevalcap's single Java run does.

    Args:
        text: One raw caption.

    Returns:
        The lower-cased tokens.

    Example:
        >>> ptb_tokenize("A man's dog doesn't like the U.S. flag at 12:45pm.")
        ['a', 'man', "'s", 'dog', 'does', "n't", 'like', 'the', 'u.s.', 'flag', 'at', '12:45', 'pm']
    """
    return ptb_tokenize_lines([text, _ASSUMED_NEXT_CAPTION])[0]


def ptb_tokenize_lines(lines: Sequence[str]) -> list[list[str]]:
    """Tokenize captions exactly as pycocoevalcap does in one Java run over all of them.

    The captions are joined with newlines (a newline inside a caption becomes a space, as pycocoevalcap
    does), lexed as one text, and cut back into lines; see :func:`ptb_tokenize`.

    Args:
        lines: Raw captions, in the order pycocoevalcap would write them.

    Returns:
        The lower-cased, punctuation-filtered tokens of each caption.
    """
    if isinstance(lines, str):
        raise ValueError("ptb_tokenize_lines takes a sequence of captions, not a string")
    if not lines:
        return []
    text = "\n".join(line.translate(_OTHER_LINE_BREAKS) for line in lines)
    astral = _ASTRAL.search(text) is not None
    if astral:  # Java lexes UTF-16 code units: an emoji is two (untokenizable) surrogates
        text = "".join(_utf16_units(char) for char in text)
    lines_of_tokens: list[list[str]] = [[]]
    for token in _lex(text):
        if token == NEWLINE:
            lines_of_tokens.append([])
            continue
        if astral:
            token = token.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        lines_of_tokens[-1].append(token.lower())
    # pycocoevalcap reads Java's lines with ``line.rstrip().split(" ")``: a line's last token loses trailing
    # characters Python counts as white space (U+0085, U+2009, U+3000 can end a URL or an e-mail).
    return [
        [word for word in " ".join(tokens).rstrip().split(" ") if word and word not in PUNCTUATIONS]
        for tokens in lines_of_tokens
    ]


def _utf16_units(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return char
    code -= 0x10000
    return chr(0xD800 + (code >> 10)) + chr(0xDC00 + (code & 0x3FF))


def _lex(text: str) -> list[str]:
    """PTBLexer's tokens (before lower-casing), with :data:`NEWLINE` for each line break."""
    dispatch = _dispatch()
    tokens: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        char = text[pos]
        if char == "\n":
            tokens.append(NEWLINE)
            pos += 1
            continue
        if char in " \t":
            pos = _SPACES.match(text, pos).end()
            continue
        plain = _PLAIN_WORD.match(text, pos)
        if plain and plain.group().lower() not in _ASSIMILATIONS:
            tokens.append(plain.group())
            pos = plain.end()
            continue
        candidates = dispatch.get(char)
        if candidates is None:
            candidates = dispatch[char] = _candidates(char)
        best, best_end = None, pos
        for rule in candidates:
            match = rule.pattern.match(text, pos)
            # The longest match wins, its trailing context included; on a tie the earlier rule stays.
            if match is not None and match.end(2) > best_end:
                best, best_end = (rule, match), match.end(2)
        assert best is not None  # the last rule matches any character but "\n"
        rule, match = best
        token, consumed = rule.action(match.group(1))
        if token is not None:
            tokens.append(token)
        pos += consumed
    return tokens


class _Rule:
    """One PTBLexer rule: group 1 is ``yytext``, group 2 the trailing context (empty if none), and the action.

    The action gets ``yytext`` and returns the token (``None`` for none) and how many characters it keeps
    (fewer than ``len(yytext)`` after a ``yypushback``).
    """

    __slots__ = ("action", "first", "pattern")

    def __init__(self, main: str, action: Action, trailing: str | None) -> None:
        self.pattern = re.compile(f"({main})" + (f"(?=({trailing}))" if trailing is not None else "()"))
        self.action = action
        self.first = _first_chars(main)


@functools.cache
def _compiled_rules() -> tuple[_Rule, ...]:
    rules = []
    for mains, action, trailing in lexer_rules():
        for main in [mains] if isinstance(mains, str) else mains:
            rules.append(_Rule(main, action, trailing))
    return tuple(rules)


@functools.cache
def _dispatch() -> dict[str, tuple[_Rule, ...]]:
    """The rules that can match at a character, filled in as characters are met."""
    return {}


def _candidates(char: str) -> tuple[_Rule, ...]:
    code = ord(char)
    return tuple(rule for rule in _compiled_rules() if rule.first is None or _in_ranges(code, rule.first))


def _in_ranges(code: int, ranges: list[tuple[int, int]]) -> bool:
    index = bisect.bisect_right(ranges, (code, _MAX_CODE)) - 1
    return index >= 0 and ranges[index][0] <= code <= ranges[index][1]


def _first_chars(pattern: str) -> list[tuple[int, int]] | None:
    """Sorted code point ranges a match of ``pattern`` can start with; ``None``: any character (or unknown).

    Read from the parse tree of CPython's ``re``, only to skip rules that cannot match at a character:
    where a node is not understood, the rule is tried everywhere.
    """
    try:
        ranges, nullable = _first_of_sequence(_sre_parser.parse(pattern))
    except (AttributeError, TypeError, ValueError, _UnknownNode):
        return None
    return None if nullable else _merge(ranges)


class _UnknownNode(Exception):
    """A parse-tree node whose first characters are not derived here."""


def _first_of_sequence(items) -> tuple[list[tuple[int, int]], bool]:
    ranges: list[tuple[int, int]] = []
    for op, av in items:
        first, nullable = _first_of_node(op, av)
        ranges += first
        if not nullable:
            return ranges, False
    return ranges, True


def _first_of_node(op, av) -> tuple[list[tuple[int, int]], bool]:
    c = _sre_constants
    if op is c.LITERAL:
        return [(av, av)], False
    if op is c.NOT_LITERAL:
        return _complement([(av, av)]), False
    if op is c.ANY:
        return [(0, _MAX_CODE)], False
    if op is c.IN:
        ranges, negate = [], False
        for item_op, item_av in av:
            if item_op is c.NEGATE:
                negate = True
            elif item_op is c.LITERAL:
                ranges.append((item_av, item_av))
            elif item_op is c.RANGE:
                ranges.append(item_av)
            else:  # categories (\d, \w): the rules use none
                raise _UnknownNode(item_op)
        return (_complement(ranges) if negate else ranges), False
    if op is c.BRANCH:
        results = [_first_of_sequence(branch) for branch in av[1]]
        return [r for ranges, _ in results for r in ranges], any(nullable for _, nullable in results)
    if op is c.SUBPATTERN:
        return _first_of_sequence(av[-1])
    if op in (c.MAX_REPEAT, c.MIN_REPEAT):
        ranges, nullable = _first_of_sequence(av[2])
        return ranges, nullable or av[0] == 0
    if op in (c.AT, c.ASSERT, c.ASSERT_NOT):  # zero width: ignoring its constraint only adds candidates
        return [], True
    raise _UnknownNode(op)


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for lo, hi in _merge(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    return out + ([(start, _MAX_CODE)] if start <= _MAX_CODE else [])
