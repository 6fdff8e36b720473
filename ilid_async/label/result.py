"""What every labelling backend gives back, and the counters they keep the same way.

A backend (the in-process llama.cpp engine, the OpenAI-compatible server client) has
``start()``, ``label(label, data) -> LabelResult``, ``close(drain)``, ``capacity`` (records it
works on at once) and ``stats``; the pipeline uses nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from ilid_async import reasons
from ilid_async.label.quality import QUALITY_KEYS, quality_issues

__all__ = ["LabelResult", "answer_result", "new_stats", "count_result"]


@dataclass
class LabelResult:
    fields: dict[str, str | None] | None  # the five raw values; None when it failed
    reason: str | None = None  # why it failed
    truncated: bool = False  # the page text was cut to fit


def answer_result(fields: dict[str, str | None], truncated: bool) -> LabelResult:
    """The result of a record whose five values were generated: a failure if all are empty."""
    if not any(fields.values()):
        return LabelResult(None, reasons.EMPTY_ANSWER, truncated)
    return LabelResult(fields, None, truncated)


def new_stats() -> dict[str, int]:
    """records started, truncated inputs, failures, generated tokens, and the quality counts."""
    return {"records": 0, "truncated": 0, "failed": 0, "tokens": 0, **{key: 0 for key in QUALITY_KEYS}}


def count_result(stats: dict[str, int], result: LabelResult) -> None:
    if result.fields is None:
        stats["failed"] += 1
    else:
        for key in quality_issues(result.fields):
            stats[key] += 1
