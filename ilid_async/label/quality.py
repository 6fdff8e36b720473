"""Label quality checks as plain functions: answers that break the prompt's own rules, and labels
not grounded in the page text.

The prompt asks for a short label of at most 4 words, a description of at most 30 words and no
numbers; the pre-filter already deleted every digit from its input, so a digit in an answer was
made up. The engines keep these rules while generating (label/prompt.py ``value_end``), so the
counts here stay zero for their answers; they are still counted and reported, for answers of
older versions or of a prompt that turns the rules off, so a weak model or prompt shows in the
run's summary instead of hiding in the dataset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ilid_async.fields import GROUNDED_FIELDS

__all__ = [
    "SHORT_LABEL_MAX_WORDS", "DESCRIPTION_MAX_WORDS", "QUALITY_KEYS", "quality_issues", "label_quality", "stem_words",
    "page_words", "ungrounded_fields", "grounding_counts", "NO_VALUE", "text_words", "text_word_set",
    "word_from_text", "words_from_text", "first_word_not_from_text"
]

SHORT_LABEL_MAX_WORDS = 4
DESCRIPTION_MAX_WORDS = 30
QUALITY_KEYS = ("label_short_over_4_words", "description_over_30_words", "with_digits")
_DIGIT = re.compile(r"\d")


def _words(value: str | None) -> int:
    return len(value.split()) if value else 0


def quality_issues(fields: Mapping[str, str | None]) -> list[str]:
    """The QUALITY_KEYS one record's labels break."""
    issues = []
    if _words(fields.get("label_short")) > SHORT_LABEL_MAX_WORDS:
        issues.append("label_short_over_4_words")
    if _words(fields.get("description")) > DESCRIPTION_MAX_WORDS:
        issues.append("description_over_30_words")
    if any(v and _DIGIT.search(v) for v in fields.values()):
        issues.append("with_digits")
    return issues


def label_quality(records: Iterable[Mapping[str, str | None]]) -> dict[str, int]:
    """Over label dicts: how many records there are and how many break each rule.

    ``with_digits`` counts records with a digit in any field; ``digits_<field>`` per field.
    """
    counts: dict[str, int] = {"records": 0, **{key: 0 for key in QUALITY_KEYS}}
    for fields in records:
        counts["records"] += 1
        for key in quality_issues(fields):
            counts[key] += 1
        for name, value in fields.items():
            if value and _DIGIT.search(value):
                counts[f"digits_{name}"] = counts.get(f"digits_{name}", 0) + 1
    return counts


# --- grounding ----------------------------------------------------------------------------------

# Fields that name things the page must mention; a description may summarise in other words.
# Words a label may add that a page need not contain.
_FUNCTION_WORDS = frozenset("a an and as at by for from in into of on or per the to with without".split())
# Common English endings: "hinges" is grounded in "hinge", "plated" in "plating".
_SUFFIXES = ("ing", "ed", "es", "s")
_LETTERS = re.compile(r"[^\W\d_]+")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    # "hinge", "hinges": "hing"; "plate", "plated", "plating": "plat".
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def stem_words(text: str | None) -> list[str]:
    """The words of a text, lower-cased and without common endings, in order."""
    return [_stem(word) for word in _LETTERS.findall((text or "").lower())]


def _stems(text: str | None) -> set[str]:
    return set(stem_words(text))


def page_words(label: str, data: Iterable[str]) -> set[str]:
    """The word stems of a record's pre-filtered label and text: what its labels may use."""
    words = _stems(label)
    for piece in data:
        words |= _stems(piece)
    return words


def ungrounded_fields(fields: Mapping[str, str | None], words: set[str]) -> list[str]:
    """The GROUNDED_FIELDS whose value has a word (other than a function word) that the page
    text (``page_words``) does not contain, allowing common suffixes. Empty values pass."""
    return [name for name in GROUNDED_FIELDS
            if fields.get(name) and not (_stems(fields[name]) - _FUNCTION_WORDS) <= words]


def grounding_counts(rows: Iterable[tuple[str, list[str], Mapping[str, str | None]]]) -> dict[str, int]:
    """Over (label, data, answer) rows: how many answers have each field not grounded."""
    counts: dict[str, int] = {name: 0 for name in GROUNDED_FIELDS}
    for label, data, fields in rows:
        for name in ungrounded_fields(fields, page_words(label, data)):
            counts[name] += 1
    return counts


# --- words of the record's own text (prompt.from_text) --------------------------------------------

_TEXT_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
NO_VALUE = "none"  # what a from_text field may always answer


def text_words(label: str, data: Iterable[str]) -> list[str]:
    """The words a from_text field may be written in: those of the record's label and text,
    as written, lower-cased and capitalised, and "none"; in order of first use."""
    words: dict[str, None] = {NO_VALUE: None, NO_VALUE.capitalize(): None}
    for piece in (label, *data):
        for word in _TEXT_WORD.findall(piece):
            words.update(dict.fromkeys((word, word.lower(), word.capitalize())))
    return list(words)


def text_word_set(label: str, data: Iterable[str]) -> set[str]:
    """The lower-cased words of a record's label and text, and the parts of its hyphenated
    words, with "none": what ``words_from_text`` checks against."""
    words = {NO_VALUE}
    for piece in (label, *data):
        _add_words(words, _TEXT_WORD.findall(piece.lower()))
    return words


def _add_words(words: set[str], found: Iterable[str]) -> None:
    """Lower-cased words and the parts of hyphenated ones, into ``words``."""
    for word in found:
        word = word.lower()
        words.add(word)
        words.update(word.split("-"))


def word_from_text(word: str, words: set[str]) -> bool:
    """One word (``text_word_set``): itself, or each of its hyphenated parts, is in the text."""
    word = word.lower()
    return word in words or all(part in words for part in word.split("-"))


def words_from_text(value: str, words: Iterable[str]) -> bool:
    """True when every word of ``value`` is one of ``words`` (``text_words``), in any case."""
    allowed: set[str] = set()
    _add_words(allowed, words)
    return first_word_not_from_text(value, allowed, complete=True) is None


def first_word_not_from_text(text: str, words: set[str], complete: bool) -> int | None:
    """Where the first word of ``text`` that is not in ``words`` starts, or None; the last word
    counts only when ``complete`` or followed by something (it may still be growing)."""
    for match in _TEXT_WORD.finditer(text):
        if (complete or match.end() < len(text)) and not word_from_text(match.group(), words):
            return match.start()
    return None
