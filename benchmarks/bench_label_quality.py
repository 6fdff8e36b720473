"""Label quality against known answers: the demo catalogue knows each product's type, material
and finish, so the labels of its records can be checked, not only counted.

Two sides label the same records with the same engine, model and settings (greedy):
- peer: the zero-shot instruction prompt ilid-async shipped before (benchmarks/prompt_zero_shot.toml),
  without field rules: what one writes first for an instruction-following model;
- ilid-async: the packaged prompt (worked examples, word limits, no digits).

Workloads: the demo shop's records (its product pages rendered and extracted by the crawler's own
code and pre-filter, one record per image URL as the store keeps them), and the labelling
benchmark's hand-written catalogue of other part kinds and messier text
(benchmarks/label_records.py: no known answers, so only the checks that need none).

Printed per side: records kept by the post-filter, short labels that name the product type (its
head noun, e.g. "castor" for "Swivel castor with total brake"; and the whole type), materials and
finishes that match the catalogue's, rule violations (short label over 4 words, description over
30, digits), labels not grounded in the page text, tradenames left in labels, and records/s.

    .venv/bin/python benchmarks/bench_label_quality.py [--records N] [--parallel 8] [--threads N]
        [--prompt FILE] [--peer-prompt FILE] [--only peer|ours] [--show N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import REPO
from label_records import RECORDS

from ilid_async.config import PACKAGED_PROMPT, LlmSettings, PromptConfig, load_prompt, load_shop
from ilid_async.demo.catalogue import TRADENAMES, Product, build_catalogue
from ilid_async.demo.server import _Pages
from ilid_async.fields import GROUNDED_FIELDS
from ilid_async.filters import Rejected, apply_no_value_rule, compile_tradename, postfilter, prefilter_record
from ilid_async.label.engine import LabelEngine
from ilid_async.label.quality import page_words, quality_issues, stem_words, ungrounded_fields
from ilid_async.crawl.page_pool import PageJob, PageRecord, process_page

PEER_PROMPT = Path(__file__).resolve().parent / "prompt_zero_shot.toml"
BASE = "http://127.0.0.1:8642"  # the demo's URL in config.toml: the pages as a run sees them
# Materials whose first word alone does not say what they are.
_TWO_WORD_MATERIALS = ("stainless steel", "bearing steel", "cast iron")
_FILLER = frozenset("a an and with of or in".split())
_TRADENAMES = re.compile(r"\b(" + "|".join(t.lower() for t in TRADENAMES) + r")\b")


@dataclass
class Item:
    label: str
    data: list[str]
    product: Product | None  # None: not from the demo catalogue


def names_type(short: str | None, kind: str) -> tuple[bool, bool]:
    """(the short label has the type's head noun, it has every word of the type)."""
    core = stem_words(kind.lower().split(" with ")[0])
    words = set(stem_words(short))
    return core[-1] in words, set(core) <= words


def material_matches(answer: str | None, truth: str) -> bool:
    """Every word of the answer is one of the truth's (digits aside), and the answer has the
    word that says what the material is ("steel" is not "stainless steel")."""
    truth_words = stem_words(truth)
    words = set(stem_words(answer)) - _FILLER
    core = truth_words[:2] if truth.lower().startswith(_TWO_WORD_MATERIALS) else truth_words[:1]
    return bool(words) and words <= set(truth_words) and set(core) <= words


def finish_matches(answer: str | None, truth: str) -> bool:
    words = set(stem_words(answer)) - _FILLER
    return bool(words) and words <= set(stem_words(truth))


def demo_items(limit: int) -> list[Item]:
    """The demo shop's records as the crawler extracts and pre-filters them."""
    shop = load_shop(REPO / "shops" / "demo.toml")
    tradename = compile_tradename(shop.tradename_regex)
    catalogue = build_catalogue()
    pages = _Pages(catalogue)
    items, seen = [], set()
    for product in catalogue.products:
        url = f"{BASE}/p/{product.slug}"
        found = process_page(shop, tradename, PageJob(shop.name, url, pages.product(product, BASE).encode(), "utf-8"))
        if not isinstance(found, PageRecord) or found.cleaned is None or found.image_url in seen:
            continue
        seen.add(found.image_url)
        items.append(Item(*found.cleaned, product))
    return items[:limit]


def other_items() -> list[Item]:
    items = []
    for label, data in RECORDS:
        cleaned = prefilter_record(label, data, None)
        if not isinstance(cleaned, Rejected):
            items.append(Item(cleaned.label, cleaned.data, None))
    return items


async def label_all(llm: LlmSettings, prompt: PromptConfig, items: list[Item]) -> tuple[list, float, dict]:
    engine = LabelEngine(llm, prompt)
    await engine.start()
    try:
        start = time.perf_counter()
        results = await asyncio.gather(*(engine.label(item.label, item.data) for item in items))
        seconds = time.perf_counter() - start
    finally:
        await engine.close()
    return [r.fields for r in results], seconds, engine.stats


def score(items: list[Item], answers: list) -> dict[str, int]:
    counts = {"records": len(items), "answered": 0, "kept": 0, "type_head": 0, "type_full": 0, "material": 0,
              "finish": 0, "violations": 0, "tradenames": 0, **{f"ungrounded_{f}": 0 for f in GROUNDED_FIELDS}}
    for item, fields in zip(items, answers):
        if fields is None:
            continue
        counts["answered"] += 1
        counts["violations"] += bool(quality_issues(fields))
        counts["tradenames"] += any(v and _TRADENAMES.search(v.lower()) for v in fields.values())
        answer = apply_no_value_rule(fields)
        labels = postfilter(answer)
        counts["kept"] += not isinstance(labels, Rejected)
        for name in ungrounded_fields(answer, page_words(item.label, item.data)):
            counts[f"ungrounded_{name}"] += 1
        if item.product is not None:
            head, full = names_type(answer.get("label_short"), item.product.kind)
            counts["type_head"] += head
            counts["type_full"] += full
            counts["material"] += material_matches(answer.get("material"), item.product.material)
            counts["finish"] += finish_matches(answer.get("material_finish"), item.product.finish)
    return counts


ROWS = [("records labelled", "answered", False), ("kept by the post-filter", "kept", False),
        ("short label names the type (head noun)", "type_head", True),
        ("short label names the whole type", "type_full", True),
        ("material matches", "material", True), ("finish matches", "finish", True),
        ("rule violations", "violations", False), ("tradenames in labels", "tradenames", False),
        *[(f"not grounded: {f}", f"ungrounded_{f}", False) for f in GROUNDED_FIELDS]]


def print_table(title: str, sides: dict[str, dict], known: bool) -> None:
    print(f"\n{title}")
    names = list(sides)
    print(f"{'':<42}" + "".join(f"{n:>18}" for n in names))
    for label, key, needs_truth in ROWS:
        if needs_truth and not known:
            continue
        cells = []
        for name in names:
            c = sides[name]
            base = c["records"] if key == "answered" else c["answered"]
            cells.append(f"{c[key]:>6} = {100 * c[key] / max(base, 1):5.1f} %")
        print(f"{label:<42}" + "".join(f"{cell:>18}" for cell in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000, help="demo records (default: all, about 300)")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--prompt", default=str(PACKAGED_PROMPT))
    parser.add_argument("--peer-prompt", default=str(PEER_PROMPT))
    parser.add_argument("--only", choices=("peer", "ours"))
    parser.add_argument("--show", type=int, default=0, help="print the first N answers of each side")
    args = parser.parse_args()

    llm = LlmSettings(n_parallel=args.parallel, n_threads=args.threads or os.cpu_count() or 1)
    demo, other = demo_items(args.records), other_items()
    print(f"demo records: {len(demo)}; other records: {len(other)}; parallel {args.parallel}, "
          f"threads {llm.n_threads}, greedy, n_ctx {llm.n_ctx}")
    prompts = {"peer (zero-shot)": Path(args.peer_prompt), "ilid-async": Path(args.prompt)}
    if args.only:
        prompts = {k: v for k, v in prompts.items() if (args.only == "peer") == k.startswith("peer")}
    demo_scores, other_scores, speed = {}, {}, {}
    for name, path in prompts.items():
        prompt = load_prompt(path)
        answers, seconds, stats = asyncio.run(label_all(llm, prompt, demo + other))
        demo_scores[name] = score(demo, answers[:len(demo)])
        other_scores[name] = score(other, answers[len(demo):])
        speed[name] = (len(demo) + len(other)) / seconds
        print(f"{name}: {path.name}, {len(prompt.examples)} examples, shared prefix "
              f"{stats['prefix_tokens']} tokens; {len(answers)} records in {seconds:.1f} s = "
              f"{speed[name]:.2f} records/s, {stats['tokens']} tokens generated", file=sys.stderr)
        for item, fields in list(zip(demo, answers))[:args.show]:
            print(f"  {item.product.kind!r:36} {item.product.material!r:28} -> {fields}")
    print_table("demo shop (known type, material and finish)", demo_scores, known=True)
    print_table("other catalogue (benchmarks/label_records.py)", other_scores, known=False)
    print()
    for name, rate in speed.items():
        print(f"{name:<20}: {rate:.2f} records/s")
    if len(speed) == 2:
        (peer, peer_rate), (ours, ours_rate) = speed.items()
        p, o = demo_scores[peer], demo_scores[ours]
        print(f"ratio ilid-async / peer: kept {o['kept'] / max(p['kept'], 1):.2f}x, short labels naming the type "
              f"{o['type_head'] / max(p['type_head'], 1):.2f}x, records/s {ours_rate / peer_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
