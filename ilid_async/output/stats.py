"""Dataset statistics (rules §7) as pure computations: record count, unique values per field,
per-source counts and word frequencies. Charts and the HTML report are report_html.py's job,
so this module never imports matplotlib."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ilid_async.fields import DATASET_ORDER

__all__ = [
    "UNIQUE_FIELDS",
    "WORD_FIELDS",
    "TOP_WORDS",
    "DatasetStats",
    "compute_stats",
    "folder_of",
    "words",
    "word_frequencies",
    "format_stats",
    "printable",
]

# rules §7: unique values of these fields; the folder (first part of `image`) and the source
# tag are what the ILID format adds.
UNIQUE_FIELDS: tuple[str, ...] = DATASET_ORDER
# rules §7: the fields with word-frequency charts, and how many words each shows.
WORD_FIELDS: tuple[str, ...] = ("label_short", "label_long", "material")
TOP_WORDS = 40

_REMOVED = re.compile(r"[.,]")
# Control characters in crawled text would drive the terminal (escape sequences).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class DatasetStats:
    records: int
    unique: dict[str, int]  # field -> distinct non-null values
    missing: dict[str, int]  # field -> entries where it is null or absent
    folders: int  # distinct image folders
    per_source: list[tuple[str, int]]  # most records first, then by name
    top_words: dict[str, list[tuple[str, int]]]  # WORD_FIELDS -> top TOP_WORDS (word, count)


def words(value: str) -> list[str]:
    """rules §7 tokenisation: lower-cased, "." and "," removed, split on white space."""
    return _REMOVED.sub("", value.lower()).split()


def word_frequencies(values: Iterable[Any], top: int = TOP_WORDS) -> list[tuple[str, int]]:
    """The `top` most frequent words over the string values (others, e.g. null, are skipped).

    Ties are broken alphabetically so that the chart is the same on every run.
    """
    counts: Counter[str] = Counter()
    for value in values:
        if isinstance(value, str):
            counts.update(words(value))
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]


def folder_of(entry: dict[str, Any]) -> str | None:
    """The folder part of an entry's ``image`` (``<folder>/<id>.png``), None without one."""
    image = entry.get("image")
    if not isinstance(image, str) or "/" not in image:
        return None
    return image.split("/", 1)[0]


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _hashable(value: Any) -> Any:
    # A hand-edited file may hold lists or objects where strings belong; count them, not crash.
    return value if isinstance(value, (str, int, float, bool)) else repr(value)


def compute_stats(entries: Sequence[dict[str, Any]], top: int = TOP_WORDS) -> DatasetStats:
    unique = {f: len({_hashable(e[f]) for e in entries if _present(e.get(f))}) for f in UNIQUE_FIELDS}
    missing = {f: sum(1 for e in entries if not _present(e.get(f))) for f in UNIQUE_FIELDS}
    folders = {folder for e in entries if (folder := folder_of(e)) is not None}
    sources = Counter(str(e.get("source") or "") for e in entries)
    return DatasetStats(
        records=len(entries),
        unique=unique,
        missing=missing,
        folders=len(folders),
        per_source=sorted(sources.items(), key=lambda item: (-item[1], item[0])),
        top_words={f: word_frequencies((e.get(f) for e in entries), top) for f in WORD_FIELDS},
    )


def printable(text: str, limit: int = 60) -> str:
    """Crawled text made safe and short for a terminal: control characters escaped, white
    space collapsed, cut at `limit` characters with an ellipsis."""
    text = " ".join(text.split())
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_stats(stats: DatasetStats, words_shown: int = 10) -> str:
    """The numbers as a plain-text table for stdout."""
    lines = [f"records: {stats.records}", "", f"{'field':<16} {'unique':>8} {'missing':>8}"]
    for name in UNIQUE_FIELDS:
        lines.append(f"{name:<16} {stats.unique[name]:>8} {stats.missing[name]:>8}")
    lines.append(f"{'folder':<16} {stats.folders:>8}")
    lines.append(f"{'source':<16} {len(stats.per_source):>8}")
    lines += ["", "records per source:"]
    width = max((len(printable(s, 40)) for s, _ in stats.per_source), default=0)
    lines += [f"  {printable(s, 40) or '(none)':<{width}} {n:>8}" for s, n in stats.per_source] or ["  -"]
    lines.append("")
    for name in WORD_FIELDS:
        top = stats.top_words[name][:words_shown]
        shown = ", ".join(f"{printable(w, 30)} {n}" for w, n in top) or "-"
        lines.append(f"top words, {name}: {shown}")
    return "\n".join(lines)
