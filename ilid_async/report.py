"""The per-stage summary printed after a run and by `ilid-async status`, read from the store."""

from __future__ import annotations

from collections import Counter, defaultdict

from .store import Store

# Record states that mean "the labelling stage is behind it".
_LABELLED = {"to_image", "imaging", "done"}


def _reasons(counter: Counter) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in counter.most_common()) or "-"


def stage_summary(store: Store) -> list[dict]:
    """One dict per stage: name, found, done, pending, rejected and failed by reason."""
    counts = store.state_counts()
    rows = []

    sitemap_failed: Counter = Counter()
    sm = Counter()
    for state, reason, n in counts["sitemaps"]:
        sm[state] += n
        if state == "failed":
            sitemap_failed[reason] += n
    rows.append({"stage": "sitemaps", "found": sum(sm.values()), "done": sm["done"],
                 "pending": sm["pending"] + sm["leased"], "rejected": Counter(), "failed": sitemap_failed})

    pg = Counter()
    page_rejected: Counter = Counter()
    page_failed: Counter = Counter()
    for state, reason, n in counts["pages"]:
        pg[state] += n
        if state == "done" and reason != "record":
            page_rejected[reason] += n
        elif state == "failed":
            page_failed[reason] += n
    rows.append({"stage": "pages", "found": sum(pg.values()),
                 "done": pg["done"] - sum(page_rejected.values()),
                 "pending": pg["pending"] + pg["leased"], "rejected": page_rejected, "failed": page_failed})

    by_stage: dict[str, Counter] = defaultdict(Counter)
    states = Counter()
    for state, stage, reason, n in counts["records"]:
        states[state] += n
        if state in ("rejected", "failed"):
            by_stage[stage][(state, reason)] += n
    total = sum(states.values())

    def split(stage: str) -> tuple[Counter, Counter]:
        rejected, failed = Counter(), Counter()
        for (state, reason), n in by_stage[stage].items():
            (rejected if state == "rejected" else failed)[reason] += n
        return rejected, failed

    pre_rej, _ = split("prefilter")
    rows.append({"stage": "prefilter", "found": total, "done": total - sum(pre_rej.values()),
                 "pending": 0, "rejected": pre_rej, "failed": Counter()})
    lab_rej, lab_fail = split("label")
    post_rej, _ = split("postfilter")
    asm_rej, _ = split("assemble")
    labelled = sum(states[s] for s in _LABELLED) + sum(post_rej.values()) + sum(asm_rej.values())
    img_rej, img_fail = split("images")
    labelled += sum(img_fail.values())
    rows.append({"stage": "label", "found": labelled + states["to_label"] + states["labelling"]
                 + sum(lab_fail.values()), "done": labelled,
                 "pending": states["to_label"] + states["labelling"], "rejected": lab_rej, "failed": lab_fail})
    rows.append({"stage": "postfilter", "found": labelled, "done": labelled - sum(post_rej.values()),
                 "pending": 0, "rejected": post_rej, "failed": Counter()})
    into_assemble = labelled - sum(post_rej.values())
    rows.append({"stage": "assemble", "found": into_assemble, "done": into_assemble - sum(asm_rej.values()),
                 "pending": 0, "rejected": asm_rej, "failed": Counter()})
    rows.append({"stage": "images", "found": states["to_image"] + states["imaging"] + states["done"]
                 + sum(img_fail.values()), "done": states["done"],
                 "pending": states["to_image"] + states["imaging"], "rejected": img_rej, "failed": img_fail})
    entries = store.counters().get("dataset_entries", 0)
    rows.append({"stage": "dataset", "found": states["done"], "done": entries, "pending": 0,
                 "rejected": Counter(), "failed": Counter()})
    return rows


def format_summary(store: Store) -> str:
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
