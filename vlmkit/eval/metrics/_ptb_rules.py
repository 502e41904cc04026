"""The rules of Stanford ``PTBLexer.flex`` (CoreNLP 3.4.1, the jar pycocoevalcap ships) as Python regexes.

Used by :mod:`vlmkit.eval.metrics.ptb_tokenizer`, which runs them with JFlex's semantics. Each rule is a
main part (``yytext``), an action and an optional trailing context, in the order of the ``.flex`` file;
macro names follow the file. JFlex's ``%caseless`` is spelled out (:func:`caseless`), and its ``[:letter:]``,
``[:digit:]`` and ``[:uppercase:]`` classes are built from Python's Unicode tables minus what the jar's older
tables lack (:data:`NOT_IN_JAR`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Action = Callable[[str], tuple[str | None, int]]
Rule = tuple[str | list[str], Action, str | None]
NEWLINE = "\n"  # the token that ends a line (PTBLexer's ``*NL*`` with ``-preserveLines``)

# BMP letters and digits of today's Unicode (Python's tables) that the jar's lexer, built with Java 8's Unicode
# 6.2 tables, does not know (it deletes them as untokenizable); measured by running the jar on every BMP character.
# fmt: off
NOT_IN_JAR = (
    (0x037F, 0x037F), (0x0528, 0x052F), (0x0560, 0x0560), (0x0588, 0x0588), (0x05EF, 0x05EF), (0x0860, 0x086A),
    (0x0870, 0x0887), (0x0889, 0x088E), (0x08A1, 0x08A1), (0x08AD, 0x08C9), (0x0978, 0x0978), (0x0980, 0x0980),
    (0x09FC, 0x09FC), (0x0AF9, 0x0AF9), (0x0C34, 0x0C34), (0x0C5A, 0x0C5A), (0x0C5D, 0x0C5D), (0x0C80, 0x0C80),
    (0x0CDD, 0x0CDD), (0x0D04, 0x0D04), (0x0D54, 0x0D56), (0x0D5F, 0x0D5F), (0x0DE6, 0x0DEF), (0x0E86, 0x0E86),
    (0x0E89, 0x0E89), (0x0E8C, 0x0E8C), (0x0E8E, 0x0E93), (0x0E98, 0x0E98), (0x0EA0, 0x0EA0), (0x0EA8, 0x0EA9),
    (0x0EAC, 0x0EAC), (0x13F5, 0x13F5), (0x13F8, 0x13FD), (0x16F1, 0x16F8), (0x170D, 0x170D), (0x171F, 0x171F),
    (0x1878, 0x1878), (0x191D, 0x191E), (0x19B0, 0x19C0), (0x19C8, 0x19C9), (0x1B4C, 0x1B4C), (0x1C80, 0x1C88),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1CF2, 0x1CF3), (0x1CFA, 0x1CFA), (0x2C2F, 0x2C2F), (0x2C5F, 0x2C5F),
    (0x312E, 0x312F), (0x31BB, 0x31BF), (0x4DB6, 0x4DBF), (0x9FCD, 0x9FFF), (0xA698, 0xA69D), (0xA78F, 0xA78F),
    (0xA794, 0xA79F), (0xA7AB, 0xA7CA), (0xA7D0, 0xA7D1), (0xA7D3, 0xA7D3), (0xA7D5, 0xA7D9), (0xA7F2, 0xA7F7),
    (0xA8FD, 0xA8FE), (0xA9E0, 0xA9E4), (0xA9E6, 0xA9FE), (0xAA7E, 0xAA7F), (0xAB30, 0xAB5A), (0xAB5C, 0xAB69),
    (0xAB70, 0xABBF),
)
# fmt: on
JAR_ONLY_LETTERS = "\u1885\u1886"  # Mongolian letters that Unicode 9 made combining marks


def caseless(pattern: str) -> str:
    """JFlex ``%caseless``: ASCII letters outside character classes match both cases."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif not in_class and char.isascii() and char.isalpha():
            char = f"[{char.lower()}{char.upper()}]"
        out.append(char)
        i += 1
    return "".join(out)


def _char_class(predicate: Callable[[str], bool]) -> str:
    """The BMP characters satisfying ``predicate``, as the inside of a regex character class."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF or not predicate(chr(code)):
            continue
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "".join(
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges
    )


# --- actions -----------------------------------------------------------------------------------------------
def _same(text: str) -> tuple[str, int]:
    return text, len(text)


def _skip(text: str) -> tuple[None, int]:
    return None, len(text)


def _constant(token: str) -> Callable[[str], tuple[str, int]]:
    return lambda text: (token, len(text))


def _pushback(count: int) -> Callable[[str], tuple[str, int]]:
    return lambda text: (text[:-count], len(text) - count)


def _period_again(text: str) -> tuple[str, int]:
    """The token keeps its period, and the period is lexed again (a sentence end after an abbreviation)."""
    return text, len(text) - 1


def _acronym_before_sentence(text: str) -> tuple[str, int]:
    """``{ACRONYM}`` before a sentence-starting word: "I." -> "I" + "."; "U.S." -> "U.S." + "."."""
    return (text[:-1], 1) if len(text) == 2 else (text, len(text) - 1)


def _no_soft_hyphens(text: str) -> tuple[str, int]:
    return (text.replace("\u00ad", "") or "-"), len(text)


def _map_chars(table: dict[int, str]) -> Callable[[str], tuple[str, int]]:
    return lambda text: (text.translate(table), len(text))


_PARENS = {ord("("): "-LRB-", ord(")"): "-RRB-"}
_QUOTES_RIGHT = str.maketrans(
    {"'": "'", '"': "''", "\x91": "`", "\u2018": "`", "\u201b": "`", "\u2039": "`", "\x92": "'", "\u2019": "'",
     "\u203a": "'", "\x93": "``", "\u201c": "``", "\xab": "``", "\x94": "''", "\u201d": "''", "\xbb": "''"}
)  # fmt: skip
_QUOTES_LEFT = {**_QUOTES_RIGHT, ord("'"): "`", ord('"'): "``"}
_CURRENCY = str.maketrans({"\xa2": "cents", "\xa3": "#", "\x80": "$", "\xa4": "$", "\u20a0": "$", "\u20ac": "$"})
_FRACTIONS = str.maketrans({"\xbc": "1/4", "\xbd": "1/2", "\xbe": "3/4", "\u2153": "1/3", "\u2154": "2/3"})


def _quotes(table: dict[int, str]) -> Callable[[str], tuple[str, int]]:
    """``handleQuotes`` with LaTeX quotes; ``&apos;``/``&quot;`` count as ``'``/``"``."""

    def action(text: str) -> tuple[str, int]:
        plain = text.replace("&apos;", "'").replace("&quot;", '"')  # Java's patterns here are case-sensitive
        return plain.translate(table), len(text)

    return action


def _amp(text: str) -> tuple[str, int]:
    return re.sub("(?i)&amp;", "&", text), len(text)


def lexer_rules() -> list[Rule]:
    """PTBLexer 3.4.1's rules in their order (macro names as in ``PTBLexer.flex``): main part(s), action, trail.

    A rule given several main parts is JFlex's alternation split so that each part can match its longest.
    """
    unknown = {code for lo, hi in NOT_IN_JAR for code in range(lo, hi + 1)}
    # Java's Character.isLetter (Lu, Ll, Lt, Lm, Lo), isDigit (Nd) and isUpperCase, in the jar's Unicode version.
    letter_class = _char_class(lambda c: (c.isalpha() or c in JAR_ONLY_LETTERS) and ord(c) not in unknown)
    digit_class = _char_class(lambda c: c.isdecimal() and ord(c) not in unknown)
    upper_class = _char_class(lambda c: c.isupper() and ord(c) not in unknown)
    letter = f"[{letter_class}]"
    digit = f"[{digit_class}]"
    letter_or_digit = f"[{letter_class}{digit_class}]"
    # {LETTER}: [:letter:], entity-accented vowels, soft hyphen, combining marks and other word-internal marks.
    letter_extra = (
        r"\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385\u03cf"
        r"\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f\u0591-\u05bd\u05bf\u05c1"
        r"\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f"
        r"\u0711\u0730-\u074f\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e"
        r"\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7\u09e2\u09e3"
        r"\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd"
        r"\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
    )
    splet = "&[aeiouAEIOU]" + caseless("(?:acute|grave|uml);")
    big_letter = f"(?:[{letter_class}{letter_extra}]|{splet})"
    big_letter_or_digit = f"(?:[{letter_class}{letter_extra}{digit_class}]|{splet})"
    space = "[ \t\u00a0\u2000-\u200a\u3000]"
    spacenl = "[ \t\u00a0\u2000-\u200a\u3000\n\r\u2028\u2029\x0b\x0c\x85]"
    sgml_name = "[A-Za-z][A-Za-z0-9_:.-]*"
    sgml = (
        f"<(?:[!?][A-Za-z-][^>\r\n]*|{sgml_name}(?:[ ]+(?:{sgml_name}[ ]*=[ ]*(?:'[^'\n]*'|\"[^\"\n]*\")|{sgml_name}))*"
        f"[ ]*/?|/{sgml_name})[ ]*>"
    )
    apos = "(?:['\x92\u2019]|" + caseless("&apos;") + ")"
    apos_etc = f"(?:{apos}|[`\x91\u2018\u201b])"
    hyphen = "[-_\u058a\u2010\u2011]"
    word = f"{big_letter}{big_letter_or_digit}*(?:[.!?]{big_letter}{big_letter_or_digit}*)*"
    redaux = apos + caseless("(?:[msdMSD]|re|ve|ll)")
    sword = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
    sredaux = caseless("n") + apos_etc + caseless("t")
    num = f"(?:{digit}*(?:[.:,\u00ad\u066b\u066c]{digit}+)+|{digit}+)"
    acro_tails = [caseless(r"(?:Canada|Sino|Korean|EU|Japan|non)-U\.S"), caseless(r"U\.S\.-(?:U\.K|U\.S\.S\.R)")]
    acro = ["[A-Za-z](?:\\.[A-Za-z])*", *acro_tails]
    acro2 = "(?:" + "|".join(["[A-Za-z](?:\\.[A-Za-z])+", *acro_tails]) + ")"
    thing_part = f"(?:[dDoOlL]{apos_etc}{letter_or_digit})?{letter_or_digit}+"
    thing = f"{thing_part}(?:{hyphen}{thing_part})*"
    thinga = "[A-Z]+(?:(?:[+&]|" + caseless("&amp;") + ")[A-Z]+)+"
    hthing = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{acro2}\\.|[A-Za-z0-9\u00ad]+))+"
    insentp = "[,;:\u3001]"
    abbrev1 = caseless(
        "(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mon|Tue|Tues|Wed|Thu|Thurs|Fri"  # months, days
        "|Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn"
        "|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo"  # states
        "|Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"  # companies
        "|tel|est|ext|sq|Jr|Sr|Bros|(?:Ed|Ph)\\.D|Blvd|Rd|Esq|etc|al|seq|Bldg)\\."
    )
    abbrev4 = [  # alternatives as separate rules: "a.k.a.x." is ACRO + ".", longer than "a.k.a."
        caseless("Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt"
            "|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme"
            "|Msgr|Sfc"),
        caseless("vs|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Ph"),
        *acro,
        caseless("Invt|Elec|Natl|M[ft]g|Dept"),
    ]  # fmt: skip
    sentence_starters = caseless(
        "[A]bout|[A]ccording|[A]dditionally|[A]fter|[A]n|[A]|[A]s|[A]t|[B]ut|[E]arlier|[H]e|[H]er|[H]ere|[H]owever"
        "|[I]f|[I]n|[I]t|[L]ast|[M]any|[M]ore|[M]r\\.|[M]s\\.|[N]ow|[O]nce|[O]ne|[O]ther|[O]ur|[S]he|[S]ince|[S]o"
        "|[S]ome|[S]uch|[T]hat|[T]he|[T]heir|[T]hen|[T]here|[T]hese|[T]hey|[T]his|[W]e|[W]hen|[W]hile|[W]hat|[Y]et"
        "|[Y]ou"
    )
    url_end = '[^ \t\n\f\r"<>|.!?(){},-]'
    url_path = f'(?:/[^ \t\n\f\r"<>|()]+{url_end})?'
    email_part = '[^ \t\n\f\r"<>|(){}.\u00a0]+'
    phone_sep = "[- \u00a0]"
    filename_ext = caseless(
        "(?:class|docx|html|java|jpeg|bat|bmp|cgi|cpp|dll|doc|exe|gif|htm|jar|jpg|mov|mp3|pdf|php|png|ppt|sql"
        "|tar|txt|wav|xml|zip|gz|pl|ps|py|c|h|x)"
    )
    misc_symbol = (
        "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387\u05be\u05c0\u05c3"
        "\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d\u0703-\u070d\u07f6-\u07f8"
        "\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f"
        "\u208a-\u208e\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40"
        "\uff5b-\uff65]"
    )
    asian_smiley = [
        r"[\^x=~<>]\.\[\^[xX]=~<>\]",  # sic: PTBLexer.flex escapes the second bracket
        r"[\-\^x=~<>']_[\-\^x=~<>']",
        r"\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)",
        r"\([\^x=~<>']-[\^x=~<>'`]\)",
    ]
    paren_action = _map_chars(_PARENS)

    return [
        (caseless("c[+][+]"), _same, None),
        (caseless("(?:c|f)#"), _same, None),
        (caseless("cannot"), _pushback(3), None),
        (caseless("'twas"), _pushback(3), None),
        (caseless("'tis"), _pushback(2), None),
        (caseless("gonna|gotta|lemme|gimme|wanna"), _pushback(2), None),
        (sgml, lambda text: (text.replace(" ", "\u00a0"), len(text)), None),
        (["&" + caseless("(?:MD|mdash|ndash);"), "[\x96\x97\u2013\u2014\u2015]"], _constant("--"), None),
        (caseless("&amp;"), _constant("&"), None),
        (caseless("&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"), _same, None),
        (word, _no_soft_hyphens, redaux),
        (sword, _no_soft_hyphens, sredaux),
        (word, _no_soft_hyphens, None),
        (
            [
                f"{apos}{caseless('n')}{apos}?",
                f"[lLdDjJ]{apos}",
                caseless("Dunkin") + apos,
                caseless("somethin") + apos,
                caseless("ol") + apos,
                apos + caseless("em"),
                f"[A-HJ-XZn]{apos_etc}{letter}{{2,}}",
                f"{apos}[2-9]0" + caseless("s"),
                apos + caseless("till?"),
                f"{letter}+[aeiouyAEIOUY]{apos_etc}[aeiouA-Z]{letter}*",
                apos + caseless("cause"),
                caseless("cont'd\\.?"),
                *[caseless(w) for w in ["'twas", "nor'easter", "c'mon", "e'er", "s'mores", "ev'ry", "li'l", "nat'l"]],
                caseless("O") + apos_etc + caseless("o"),
            ],
            _same,
            None,
        ),
        (caseless("y") + apos, _same, letter),
        (caseless("https?://") + f'[^ \t\n\f\r"<>|(){{}}]+{url_end}', _same, None),
        (
            [
                caseless("www") + '\\.(?:[^ \t\n\f\r"<>|.!?(){},]+\\.)+[a-zA-Z]{2,4}' + url_path,
                "(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\\.)+" + caseless("(?:com|net|org|edu)") + url_path,
            ],
            _same,
            None,
        ),
        (
            "(?:" + caseless("&lt;") + f'|<)?[a-zA-Z0-9][^ \t\n\f\r"<>|()\u00a0{{}}]*@(?:{email_part}\\.)*{email_part}'
            "(?:" + caseless("&gt;") + "|>)?",
            _same,
            None,
        ),
        (["@[a-zA-Z_][a-zA-Z_0-9]*", f"#{big_letter}+"], _same, None),
        (redaux, _quotes(_QUOTES_RIGHT), "[^A-Za-z]"),
        (sredaux, _quotes(_QUOTES_RIGHT), "[^A-Za-z]"),
        (f"{digit}{{1,2}}[-/]{digit}{{1,2}}[-/]{digit}{{2,4}}", _same, None),
        (f"[-+]?{num}", _no_soft_hyphens, None),
        ("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", _same, None),
        (
            f"(?:{digit}{{1,4}}[- \u00a0])?{digit}{{1,4}}(?:\\\\?/|\u2044){digit}{{1,4}}",
            lambda text: (text.replace(" ", "\u00a0"), len(text)),
            None,
        ),
        ("[\u00bc\u00bd\u00be\u2153-\u215e]", _map_chars(_FRACTIONS), None),
        (
            caseless(r"-(?:RRB|LRB|RCB|LCB|RSB|LSB)-|C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls")
            + "|"
            + caseless("Cap")
            + apos
            + caseless("n")
            + "|"
            + caseless("c")
            + apos
            + caseless("est"),
            _amp,
            None,
        ),
        (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", _same, None),
        (["[A-Z]*\\$", "#"], _same, None),
        ("[\xa2\xa3\xa4\xa5\x80\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", _map_chars(_CURRENCY), None),
        (
            [f"(?:{a})\\." for a in acro],
            _acronym_before_sentence,
            f"{spacenl}+(?:{sentence_starters}|{sgml}){spacenl}",
        ),
        (caseless(r"(?:ca|figs?|prop|nos?|art|bldg|prop|pp|op)\."), _same, f"{spacenl}?{digit}"),
        (caseless(r"(?:pt[eyEY]|co)\."), _same, space + caseless("(?:ltd|lim)")),
        (abbrev1, _period_again, f"{spacenl}(?:{sgml}|{spacenl}|[{upper_class}])"),
        (abbrev1, _same, "(?s:..)"),
        (abbrev1, _period_again, None),
        ([f"(?:{a})\\." for a in abbrev4], _same, None),
        (abbrev4, _same, space),
        (acro, _same, spacenl),
        (f"{apos}[0-9][0-9]", _same, spacenl),
        (
            f"{big_letter_or_digit}+(?:\\.{big_letter_or_digit}+)*\\.{filename_ext}",
            _same,
            f"(?:{spacenl}|[.?!,])",
        ),
        (word + "\\.", _no_soft_hyphens, insentp),
        (
            [
                f"(?:\\([0-9]{{2,3}}\\)[ \u00a0]?|(?:\\+\\+?)?(?:[0-9]{{2,4}}{phone_sep})?[0-9]{{2,4}}{phone_sep})"
                f"[0-9]{{3,4}}{phone_sep}?[0-9]{{3,5}}",
                "(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}",
            ],
            lambda text: (text.replace(" ", "\u00a0").translate(_PARENS), len(text)),
            None,
        ),
        ('"|' + caseless("&quot;"), _quotes(_QUOTES_LEFT), "[A-Za-z0-9$]"),
        ('"|' + caseless("&quot;"), _quotes(_QUOTES_RIGHT), None),
        ("\x7f", _skip, None),
        ("<|" + caseless("&lt;"), _constant("<"), None),
        (">|" + caseless("&gt;"), _constant(">"), None),
        ("[<>]?[:;=][-o*']?[()DPdpO\\\\{@|\\[\\]]", paren_action, "[^A-Za-z0-9]"),
        (asian_smiley, paren_action, None),
        ("\\{", _constant("-LCB-"), None),
        ("\\}", _constant("-RCB-"), None),
        ("\\[", _constant("-LSB-"), None),
        ("\\]", _constant("-RSB-"), None),
        ("\\(", _constant("-LRB-"), None),
        ("\\)", _constant("-RRB-"), None),
        ("-+", lambda text: ("--" if 3 <= len(text) <= 4 else text, len(text)), None),
        (["\\.{3,5}", "(?:\\.[ \u00a0]){2,4}\\.", "[\x85\u2026]"], _constant("..."), None),
        (["@+", "#+", "_+"], _same, None),
        (["\\*+", "(?:\\\\\\*){1,3}"], _same, None),
        (insentp, _same, None),
        ("[?!]+", _same, None),
        ("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", _same, None),
        ("=", _same, None),
        ("/", _same, None),
        (hthing + "\\.", _no_soft_hyphens, insentp),
        (hthing, _no_soft_hyphens, None),
        (thing + "\\.", _same, insentp),
        (thing, _same, None),
        (thinga + "\\.", _amp, insentp),
        (thinga, _amp, None),
        ("'", _quotes(_QUOTES_LEFT), "[A-Za-z][^ \t\n\r\u00a0]"),
        (redaux, _quotes(_QUOTES_RIGHT), None),
        (sredaux, _quotes(_QUOTES_RIGHT), None),
        (
            [
                apos,
                "''",
                "[`\u2018\u2019\u201a\u201b\u201c\u201d\x91\x92\x93\x94\u201e\u201f\u2039\u203a\xab\xbb]{1,2}",
            ],
            _quotes(_QUOTES_RIGHT),
            None,
        ),
        ("<<|>>", _same, None),
        (misc_symbol, _same, None),
        (["\x00", f"{space}+", "[\u200b\u200e\u200f\ufeff]"], _skip, None),
        ("\r\n?|\n|[\u2028\u2029\x0b\x0c\x85]", _constant(NEWLINE), None),
        (caseless("&nbsp;"), _skip, None),
        (".", _skip, None),  # untokenizable (emoji halves, control characters): deleted, as PTBLexer's default
    ]
