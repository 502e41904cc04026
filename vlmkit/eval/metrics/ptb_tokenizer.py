"""A pure-Python stand-in for the COCO caption tokenizer (Stanford PTBTokenizer 3.4.1 + punctuation filter).

pycocoevalcap runs ``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` (Java) and then drops
the punctuation tokens of ``PUNCTUATIONS``; this module reproduces that output with one regex scanner, so
CIDEr/BLEU need no JVM. Rules mirror ``PTBLexer.flex`` for what captions contain; exotic input may differ.
"""

from __future__ import annotations

import re

__all__ = ["PUNCTUATIONS", "ptb_tokenize"]

#: Tokens pycocoevalcap removes after PTB tokenization (``tokenizer/ptbtokenizer.py``). With ``-lowerCase``,
#: PTB emits ``-lrb-``/``-rrb-``, which do not match the upper-case entries and are therefore kept.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-"] + list(".?!,:-") + ["--", "...", ";"]
)

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
_CHAR_MAP = str.maketrans(
    {
        "\u2019": "'", "\u00b4": "'", "\u0092": "'", "\u2018": "`", "\u0091": "`",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00a0": " ",
        "\u2013": " -- ", "\u2014": " -- ", "\u2026": " ... ",
        "\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3",
        "\u00a3": " # ", "\u20ac": " $ ", "\u00a2": " cents ",
    }
)  # fmt: skip

_AN = r"[^\W_]"  # a letter or digit (Unicode)
_LETTER = r"[^\W\d_]"
# Abbreviations that keep their period (PTBLexer's ABBREV1/ABBREV2 lists), matched case-insensitively.
_ABBREV = re.compile(
    r"(?:jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri|ala|ariz|calif|colo|"
    r"conn|ct|dak|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev|okla|penn|tenn|va|vt|wisc?|wyo|inc|cos?|corp|"
    r"ltd|plc|bancorp|bhd|assn|univ|intl|sys|tel|est|ext|sq|jr|bros|ed\.d|ph\.d|esq|etc|al|seq|bldg|mr|mrs|ms|"
    r"drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|capt|ste?|ave|pres|lieut|"
    r"hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|sr|vs|invt|elec|natl|m[ft]g|dept|blvd|rd|a\.k\.a|cf)",
    re.IGNORECASE,
)
_ABBREV_BEFORE_NUMBER = re.compile(r"(?:ca|figs?|prop|nos?|sect?s?|arts?|paras?|pp|op|approx|pt|rs)", re.IGNORECASE)
_ACRONYM = re.compile(r"[A-Za-z](?:\.[A-Za-z])*")
# Capitalised words after which a one-letter acronym ends a sentence (PTBLexer's ACRONYM lookahead list).
_SENTENCE_STARTERS = frozenset([
    "About", "According", "Additionally", "After", "An", "A", "As", "At", "But", "Did", "During", "Earlier",
    "He", "Her", "Here", "How", "However", "If", "In", "It", "Last", "Many", "More", "Now", "Once", "One",
    "Other", "Our", "She", "Since", "So", "Some", "Such", "That", "The", "Their", "Then", "There", "These",
    "They", "This", "We", "When", "While", "What", "Who", "Why", "Yet", "You",
])  # fmt: skip

_SCANNER = re.compile(
    rf"""
    (?P<space>\s+)
    |(?P<url>(?:https?|ftp|mailto)://[^\s"<>|(){{}}\[\]]*[^\s"'<>|.!?(){{}},;:&\[\]-])
    |(?P<email>{_AN}[^\s"<>|(){{}}]*@(?:[^\s"<>|(){{}}.]+\.)*[^\s"<>|(){{}}\[\].,;:]+)
    |(?P<handle>@[A-Za-z_]\w*|\#{_LETTER}{_AN}*)
    |(?P<clitic>(?i:'(?:[2-9]0s|em|till?|cause|n'?|s|m|d|re|ve|ll)|n't)(?!{_AN})|'t(?=(?:is|was)(?!{_AN}))|'\d\d(?=\s|$))
    |(?P<bracket>[()\[\]{{}}])
    |(?P<escaped>(?i:-(?:LRB|RRB|LSB|RSB|LCB|RCB)-))
    |(?P<smiley>[<>]?[:;=][-o*']?[()DPdpO\\{{@|\[\]](?!{_AN}))
    |(?P<chunk>(?:[-+]?\.(?=\d)|[-+](?=\d))?{_AN}+(?:[-_'.,:/&]{_AN}+)*)
    |(?P<dropped>["'`]+|\.+|-+|[,;:])
    |(?P<bang>[?!]+)
    |(?P<repeat>\#+|@+|\*+|_+|\$)
    |(?P<symbol>.)
    """,
    re.VERBOSE,
)
_CONTRACTION = re.compile(r"(?i)(.*?)('(?:s|m|d|re|ve|ll)|n't)$")
_ENTITIES = {"&amp;": "&", "&quot;": '"', "&apos;": "'", "&lt;": "<", "&gt;": ">"}
_ASSIMILATIONS = {"cannot": 3, "gonna": 2, "gotta": 2, "lemme": 2, "gimme": 2, "wanna": 2}
_CASED_ABBREV = frozenset(["az", "ark", "del", "ill", "la", "mass", "miss", "ore", "pa", "tex", "wash"])


def ptb_tokenize(text: str) -> list[str]:
    """Tokenize a caption the way pycocoevalcap's ``PTBTokenizer`` + punctuation filter does.

    Follows Stanford ``PTBTokenizer`` 3.4.1 (``-preserveLines -lowerCase``) as shipped in pycocoevalcap
    (Chen et al., 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server"): splits
    clitics (``doesn't`` -> ``does n't``, ``dog's`` -> ``dog 's``), keeps hyphenated words, numbers and
    abbreviations (``u.s.``, ``p.m.``) whole, maps brackets to ``-lrb-`` etc., then removes the tokens in
    :data:`PUNCTUATIONS`. Like the Java tool, it leaves its own output of ordinary captions unchanged.

    Known difference: PTB decides whether a one-letter abbreviation ending a caption ("vitamin C.")
    keeps its period by looking at the *next* caption in its input file; here the period is split off,
    as PTB does when that caption starts with "A", "The", etc. (as COCO captions mostly do).

    Args:
        text: One raw caption.

    Returns:
        The lower-cased tokens.

    Example:
        >>> ptb_tokenize("A man's dog doesn't like the U.S. flag.")
        ['a', 'man', "'s", 'dog', 'does', "n't", 'like', 'the', 'u.s.', 'flag']
    """
    text = re.sub(r"&(?:amp|quot|apos|lt|gt);", lambda m: _ENTITIES[m.group()], text).translate(_CHAR_MAP)
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        match = _SCANNER.match(text, pos)
        assert match is not None  # the last alternative matches any character
        kind, value, pos = match.lastgroup, match.group(), match.end()
        if kind == "chunk":
            if value[-1].isalpha() and value.isupper() and text.startswith("$", pos):  # US$, C$
                value, pos = value + "$", pos + 1
            elif value.lower() in ("ol", "somethin", "dunkin") and text.startswith("'", pos):
                value, pos = value + "'", pos + 1
            tokens += _split_chunk(value, text[pos : pos + 1].isspace() or pos == len(text))
            if text.startswith(".", pos) and _keeps_period(value, text, pos + 1):
                tokens[-1] += "."
                pos += 1
        elif kind == "bracket":
            tokens.append(_BRACKETS[value])
        elif kind == "smiley":
            tokens.append(value.replace("(", "-LRB-").replace(")", "-RRB-"))
        elif kind == "symbol":
            if value.isprintable() and ord(value) <= 0xFFFF:  # PTB deletes what it cannot tokenize (emoji)
                tokens.append(value)
        elif kind not in ("space", "dropped"):
            tokens.append(value)
    return [token for token in map(str.lower, tokens) if token not in PUNCTUATIONS]


def _keeps_period(chunk: str, text: str, after: int) -> bool:
    """Whether the period right after ``chunk`` stays attached to it (an abbreviation)."""
    rest = text[after:]
    if _ACRONYM.fullmatch(chunk):
        if len(chunk) > 1:
            return True
        # A one-letter "acronym" ends the sentence before a capitalised function word; at the end of a
        # caption we assume the next caption starts with one ("A ...", "The ..."), as COCO's mostly do.
        following = rest.split(maxsplit=1)
        if not following:
            return False
        return not (rest[0].isspace() and re.sub(r"[?!]$", "", following[0]) in _SENTENCE_STARTERS)
    if _ABBREV.fullmatch(chunk) or (chunk[0].isupper() and chunk.lower() in _CASED_ABBREV):
        return True
    if _ABBREV_BEFORE_NUMBER.fullmatch(chunk) and re.match(r"\s?\d", rest):
        return True
    return chunk[0].isalpha() and rest[:1] in (",", ";", ":")


def _split_chunk(chunk: str, before_space: bool = True) -> list[str]:
    """Split one run of letters/digits and inner connectors into PTB tokens."""
    # Commas and colons stay only between digits (1,000 and 10:30); ``&`` only inside upper case (AT&T).
    parts = re.split(r"((?<!\d)[,:]|[,:](?!\d)|(?<![A-Z])&|&(?![A-Z]))", chunk)
    if len(parts) > 1:
        last = len(parts) - 1
        return [
            t
            for i, part in enumerate(parts)
            for t in ([part] if i % 2 else _split_chunk(part, before_space and i == last))
        ]
    if "/" in chunk and not re.fullmatch(r"[^\W_]+(?:-[^\W_]+)*(?:/[^\W_]+(?:-[^\W_]+)*)*", chunk):
        head, tail = chunk.split("/", 1)  # a slash joins only plain words and numbers (1/2, and/or)
        return [*_split_chunk(head, False), "/", *_split_chunk(tail, before_space)]
    if chunk.count("/") > 2:  # PTB's THING3 joins at most three parts with slashes
        *head, tail = chunk.split("/", 3)
        return ["/".join(head), "/", *_split_chunk(tail, before_space)]
    lower = chunk.lower()
    if lower in _ASSIMILATIONS:  # cannot -> can not, gonna -> gon na
        cut = len(chunk) - _ASSIMILATIONS[lower]
        return [chunk[:cut], chunk[cut:]]
    if "'" not in chunk:
        return [chunk] if chunk else []
    if chunk.endswith("'"):  # ol', somethin'
        return [chunk]
    if lower.startswith("y'"):
        return [chunk[:2], *_split_chunk(chunk[2:])]
    if re.fullmatch(r"[dol]'" + _AN + r"+", lower) or re.fullmatch(
        _LETTER + r"+[aeiouyAEIOUY]'[aeiouA-Z]" + _LETTER + "*", chunk
    ):
        return [chunk]  # o'clock, l'oreal, ma'am
    match = _CONTRACTION.fullmatch(chunk)
    if match and match.group(1):
        return [*_split_chunk(match.group(1), False), match.group(2)]
    pattern = r"('n'|'n$|'\d\d$)|'" if before_space else r"('n'|'n$)|'"
    return [piece for piece in re.split(pattern, chunk) if piece]
