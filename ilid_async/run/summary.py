"""The per-stage summary printed after a run and by `ilid-async status`, read from the store."""

from __future__ import annotations

from collections import Counter, defaultdict

from ilid_async.label.quality import DESCRIPTION_MAX_WORDS, SHORT_LABEL_MAX_WORDS, grounding_counts, label_quality
from ilid_async.run.queries import StoreQueries

__all__ = ["stage_summary", "label_quality_lines", "format_summary"]

def _reasons(counter: Counter) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counter.most_common()) or "-"


def _tally(rows: list[tuple]) -> tuple[Counter, Counter, Counter]:
    """(state, reason, n) rows -> counts by state, done-but-not-a-result reasons, failed reasons.
    A page that is "done" with a reason other than "record" was fine but not a product."""
    states: Counter[str] = Counter()
    not_results: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for state, reason, n in rows:
        states[state] += n
        if state == "done" and reason not in (None, "record"):
            not_results[reason] += n
        elif state == "failed":
            failed[reason] += n
    return states, not_results, failed


def _row(stage: str, found: int, done: int, pending: int = 0, rejected: Counter | None = None,
         failed: Counter | None = None) -> dict:
    return {"stage": stage, "found": found, "done": done, "pending": pending,
            "rejected": rejected or Counter(), "failed": failed or Counter()}


def stage_summary(store: StoreQueries) -> list[dict]:
    """One dict per stage: name, found, done, pending, rejected and failed by reason."""
    counts = store.state_counts()
    sm, _, sm_failed = _tally(counts["sitemaps"])
    pg, pg_rejected, pg_failed = _tally(counts["pages"])
    rows = [
        _row("sitemaps", sum(sm.values()), sm["done"], sm["pending"] + sm["leased"], failed=sm_failed),
        _row("pages", sum(pg.values()), pg["done"] - sum(pg_rejected.values()), pg["pending"] + pg["leased"],
             pg_rejected, pg_failed),
    ]

    states: Counter[str] = Counter()
    by_stage: dict[str, dict[str, Counter]] = defaultdict(lambda: {"rejected": Counter(), "failed": Counter()})
    for state, stage, reason, n in counts["records"]:
        states[state] += n
        if state in ("rejected", "failed"):
            by_stage[stage][state][reason] += n

    def out(stage: str, kind: str) -> int:
        return sum(by_stage[stage][kind].values())

    # Each record is in exactly one state, so every stage's counts follow from the totals.
    into_label = sum(states.values()) - out("prefilter", "rejected")
    waiting = states["to_label"] + states["labelling"]
    labelled = into_label - waiting - out("label", "failed")
    into_assemble = labelled - out("postfilter", "rejected")
    in_images = states["to_image"] + states["imaging"]
    rows += [
        _row("prefilter", sum(states.values()), into_label, rejected=by_stage["prefilter"]["rejected"]),
        _row("label", into_label, labelled, waiting, by_stage["label"]["rejected"], by_stage["label"]["failed"]),
        _row("postfilter", labelled, into_assemble, rejected=by_stage["postfilter"]["rejected"]),
        _row("assemble", into_assemble, into_assemble - out("assemble", "rejected"),
             rejected=by_stage["assemble"]["rejected"]),
        _row("images", in_images + states["done"] + out("images", "failed"), states["done"], in_images,
             by_stage["images"]["rejected"], by_stage["images"]["failed"]),
        _row("dataset", states["done"], store.counters().get("dataset_entries", 0)),
    ]
    return rows


def label_quality_lines(store: StoreQueries) -> list[str]:
    """The summary's label-quality lines (none before any answer): rule breaks, then fields
    with a word the record's pre-filtered page text does not contain."""
    quality = label_quality(store.answers())
    if not quality["records"]:
        return []
    grounding = grounding_counts(store.labelled_texts())
    return [
        f"label quality of {quality['records']} answers: label_short over {SHORT_LABEL_MAX_WORDS} words "
        f"{quality['label_short_over_4_words']}, description over {DESCRIPTION_MAX_WORDS} words "
        f"{quality['description_over_30_words']}, with digits {quality['with_digits']}",
        "labels not grounded in the page text: " + ", ".join(f"{name} {n}" for name, n in grounding.items()),
    ]


def format_summary(store: StoreQueries) -> str:
    lines = [f"{'stage':<11}{'found':>8}{'done':>8}{'pending':>9}  rejected / failed (reasons)"]
    for row in stage_summary(store):
        lines.append(
            f"{row['stage']:<11}{row['found']:>8}{row['done']:>8}{row['pending']:>9}  "
            f"rejected: {_reasons(row['rejected'])}; failed: {_reasons(row['failed'])}"
        )
    shops = store.shop_counts()
    if shops:
        lines.append("")
        for shop, counts in shops.items():
            lines.append(f"shop {shop}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    counters = store.counters()
    if counters.get("label_input_truncated"):
        lines.append(f"label inputs truncated to fit: {counters['label_input_truncated']}")
    if counters.get("sitemaps_refused_unrecorded"):
        lines.append("sitemaps refused beyond the recorded ones (http.max_sitemaps): "
                     f"{counters['sitemaps_refused_unrecorded']}")
    lines += label_quality_lines(store)
    if "exact_duplicates" in counters:
        lines.append(f"duplicate images: {counters['exact_duplicates']} exact copies, "
                     f"{counters.get('near_duplicates', 0)} near copies (images.duplicates decides)")
    hosts = store.host_stats()
    failures: dict[str, Counter] = defaultdict(Counter)
    for host, reason, n in store.failures_by_host():
        failures[host][reason] += n
    if hosts:
        lines.append("")
        lines.append(f"{'host':<24}{'requests':>9}{'2xx':>7}{'3xx':>6}{'4xx':>6}{'5xx':>6}"
                     f"{'429':>6}{'retries':>8}{'errors':>7}{'MB':>9}{'mean ms':>9}")
        for h in hosts:
            mean = 1000 * h["latency_total"] / h["requests"] if h["requests"] else 0.0
            lines.append(
                f"{h['host']:<24}{h['requests']:>9}{h['status_2xx']:>7}{h['status_3xx']:>6}"
                f"{h['status_4xx']:>6}{h['status_5xx']:>6}{h['status_429']:>6}{h['retries']:>8}"
                f"{h['errors']:>7}{h['bytes'] / 1e6:>9.1f}{mean:>9.1f}"
            )
            if failures.get(h["host"]):
                lines.append(f"{'':<24}items failed: {_reasons(failures[h['host']])}")
    return "\n".join(lines)
