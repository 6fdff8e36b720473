"""Pre-filter and post-filter of ILID records as pure functions.

These are the rules of rules §2 (pre-filtering), 3 (the "no value" rule)
and 4 (post-filtering).  Nothing here does I/O, so every stage (and the tests)
can call them directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ilid_async import reasons
from ilid_async.fields import MATERIAL_FIELDS, NAME_FIELDS

__all__ = [
    "MAX_FOLDER_BYTES",
    "Cleaned",
    "Rejected",
    "Labels",
    "compile_tradename",
    "prefilter_record",
    "prefilter",
    "apply_no_value_rule",
    "clean_field",
    "folder_name",
    "postfilter",
]

# Most file systems cap a name at 255 bytes; leave room for suffixes.
MAX_FOLDER_BYTES = 200
# Device names Windows reserves in every folder, also with an extension ("con.txt") and after
# the trailing spaces it ignores: a folder of that name cannot be made or opened there, so a
# dataset built elsewhere could not be copied to Windows. Such a name gets "_" after the device.
_WINDOWS_DEVICE = re.compile(r"(con|prn|aux|nul|(?:com|lpt)[0-9\u00b9\u00b2\u00b3]) *(\..*)?", re.IGNORECASE)


@dataclass(frozen=True)
class Cleaned:
    """A record that passed the pre-filter, with its cleaned label and data."""

    label: str
    data: list[str]


@dataclass(frozen=True)
class Rejected:
    """A record that was dropped, and the rule that dropped it."""

    reason: str


@dataclass(frozen=True)
class Labels:
    """The post-filtered LLM fields of one record, ready for assembling."""

    label_short: str
    label_long: str
    description: str | None
    material: str | None
    material_finish: str | None
    folder: str


# --- pre-filter (rules §2) -------------------------------------------------------

_CONTROL_WS = re.compile(r"[\n\r\t]")
_DIGITS = re.compile(r"\d+")


def compile_tradename(regex: str | None) -> re.Pattern[str] | None:
    """Compile a shop's tradename regex, case-insensitive; None/"" means no regex.

    An invalid regex is a configuration error and raises ValueError.
    """
    if not regex:
        return None
    try:
        return re.compile(regex, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"invalid tradename regex {regex!r}: {exc}") from exc


def _clean_text(text: str, tradename: re.Pattern[str] | None) -> str:
    """Rules 4 to 7 applied to one string."""
    if tradename is not None:
        # Rule 4 matters only here: the tradename regex sees the text as rule 4 left it.
        text = tradename.sub("", _CONTROL_WS.sub(" ", text).strip())  # rules 4 and 5
    # Rule 6, then rule 7 with str.split (the same whitespace as \s, and several times
    # faster than a regex on the thousands of short text pieces a crawl cleans per second).
    # Without a tradename regex, rule 7 also does all rule 4 would have done.
    return " ".join(_DIGITS.sub("", text).split())


def prefilter_record(
    label: str, data: list[str], tradename: re.Pattern[str] | None
) -> Cleaned | Rejected:
    """Apply rules §2 rules 2..7, in order, to one record."""
    # Rule 2: only a truly empty label is dropped here; a whitespace-only one
    # is dropped by rule 7 once it is stripped.
    if not label:
        return Rejected(reasons.EMPTY_LABEL)
    # Rule 3: same, only "" is removed; None is treated as empty too.
    kept = [d for d in data if d]
    if not kept:
        return Rejected(reasons.EMPTY_DATA)

    # Rules 4..7.
    label = _clean_text(label, tradename)
    if not label:
        return Rejected(reasons.EMPTY_LABEL)
    cleaned = [c for c in (_clean_text(d, tradename) for d in kept) if c]
    if not cleaned:
        return Rejected(reasons.EMPTY_DATA)
    return Cleaned(label=label, data=cleaned)


def prefilter(
    records: Iterable[dict], tradename: re.Pattern[str] | None
) -> tuple[list[dict], list[tuple[dict, str]]]:
    """Pre-filter raw records in the original file format.

    Records look like ``{"url": ..., "web": {"label": ..., "data": [...]}}``.
    Rule 1 (duplicate image URL, keep the first) comes first, as in the
    original, so a URL counts as seen even if its first record is dropped by a
    later rule.  Kept records are copies with the cleaned label and data; the
    input is never modified.
    """
    seen: set[str | None] = set()
    kept: list[dict] = []
    rejected: list[tuple[dict, str]] = []
    for record in records:
        url = record.get("url")
        if url in seen:
            rejected.append((record, reasons.DUPLICATE_IMAGE_URL))
            continue
        seen.add(url)

        web = record.get("web") or {}
        result = prefilter_record(
            web.get("label") or "", list(web.get("data") or []), tradename
        )
        if isinstance(result, Rejected):
            rejected.append((record, result.reason))
            continue
        kept.append({**record, "web": {**web, "label": result.label, "data": result.data}})
    return kept, rejected


# --- "no value" rule (rules §3) --------------------------------------------------

# Whole words only, so "notched" or "nonetheless" survive (the original matched
# substrings).  "n/a" and "n.a." are written out because "/" and "." are not
# word characters, so \b cannot delimit them.
_NA = r"(?<![\w./])n(?:/|\.)a\.?(?![\w./])"
_NO_VALUE_MATERIAL = re.compile(rf"\b(?:none|not|without|unknown)\b|{_NA}", re.IGNORECASE)
_NO_VALUE_LABEL = re.compile(rf"\b(?:none|not|unknown)\b|{_NA}", re.IGNORECASE)



def apply_no_value_rule(fields: dict[str, str | None]) -> dict[str, str | None]:
    """Null out LLM answers that mean "no value" (rules §3); returns a new dict.

    Empty or whitespace-only answers become None for every field; the
    description is otherwise left alone.
    """
    out: dict[str, str | None] = dict(fields)
    for key, value in fields.items():
        if value is None:
            continue
        if not value.strip():
            out[key] = None
        elif key in MATERIAL_FIELDS and _NO_VALUE_MATERIAL.search(value):
            out[key] = None
        elif key in NAME_FIELDS and _NO_VALUE_LABEL.search(value):
            out[key] = None
    return out


# --- post-filter (rules §4) ------------------------------------------------------

_NOT_KEPT_WITH_DOT = re.compile(r"[^\w\s\-.]")
_NOT_KEPT_NO_DOT = re.compile(r"[^\w\s\-]")


def clean_field(
    value: str | None, min_field_length: int = 4, keep_dot: bool = True
) -> str | None:
    """rules §4 clean(): keep only \\w (Unicode letters/digits/_), white space,
    "-" (and "." if keep_dot); strip; None if shorter than min_field_length."""
    if value is None:
        return None
    pattern = _NOT_KEPT_WITH_DOT if keep_dot else _NOT_KEPT_NO_DOT
    value = pattern.sub("", value).strip()
    if len(value) < min_field_length:
        return None
    return value


def folder_name(label_short: str) -> str | None:
    """Folder for a record's images: label_short cleaned without ".", words
    joined by "_", a Windows device name ("con", "com1") with "_" after it.
    None unless the result is a safe single path component."""
    cleaned = _NOT_KEPT_NO_DOT.sub("", label_short)
    name = "_".join(cleaned.split())
    # clean() already removes separators and dots; these checks keep the
    # guarantee even if the cleaning rule ever changes.
    if not name or name in (".", ".."):
        return None
    if "/" in name or "\\" in name or "\x00" in name:
        return None
    if len(name.encode("utf-8")) > MAX_FOLDER_BYTES:
        return None
    # Windows drops a trailing dot or space from a name, so "bolt." would become "bolt".
    name = name.rstrip(". ")
    if not name:
        return None
    if device := _WINDOWS_DEVICE.fullmatch(name):
        name = name[: device.end(1)] + "_" + name[device.end(1):]
    return name


def postfilter(fields: dict[str, str | None], min_field_length: int = 4) -> Labels | Rejected:
    """Apply rules §4 to the five LLM fields of one record.

    label_short is checked before label_long; a label that is missing, null,
    or null after cleaning rejects the record with that label's reason.
    """
    label_short = clean_field(fields.get("label_short"), min_field_length)
    if label_short is None:
        return Rejected(reasons.MISSING_LABEL_SHORT)
    label_long = clean_field(fields.get("label_long"), min_field_length)
    if label_long is None:
        return Rejected(reasons.MISSING_LABEL_LONG)
    label_short = label_short.lower()
    label_long = label_long.lower()

    folder = folder_name(label_short)
    if folder is None:
        return Rejected(reasons.UNSAFE_FOLDER)

    material = clean_field(fields.get("material"), min_field_length)
    finish = clean_field(fields.get("material_finish"), min_field_length)
    return Labels(
        label_short=label_short,
        label_long=label_long,
        description=clean_field(fields.get("description"), min_field_length),
        material=material.lower() if material is not None else None,
        material_finish=finish.lower() if finish is not None else None,
        folder=folder,
    )
