"""Labelling throughput: a naive llama-cpp-python loop against ilid-async's batched engine.

Both sides label demo-catalogue records (pre-filtered as the pipeline does) with the same
model, prompt and greedy decoding:
- naive: one `Llama.create_chat_completion` per record, JSON forced by a JSON schema of the
  five fields (grammar-constrained sampling over the whole vocabulary);
- ilid-async: `LabelEngine` with every record queued at once (forced keys, continuous batching
  over llm.n_parallel sequences, shared prefix decoded once).
The naive side is slow (about 24 s a record with the demo model on 2 cores), so it labels fewer
records; records/s is per side.

    .venv/bin/python benchmarks/bench_label.py [--baseline 3] [--records 24] [--parallel 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from common import PROMPT

from ilid_async.config import LABEL_FIELDS, LlmSettings, load_prompt
from ilid_async.demo.catalogue import build_catalogue
from ilid_async.filters import Rejected, prefilter_record
from ilid_async.label.engine import LabelEngine, resolve_model_path
from ilid_async.label.prompt import render_user
from ilid_async.label.quality import label_quality

N_CTX = 1024


def demo_records(n: int) -> list[tuple[str, list[str]]]:
    """The first n demo products that survive the pre-filter: name + description and specs."""
    records = []
    for product in build_catalogue().products:
        data = [product.description] + [text for spec in product.specs for text in spec]
        cleaned = prefilter_record(product.name, data, None)
        if not isinstance(cleaned, Rejected):
            records.append((cleaned.label, cleaned.data))
            if len(records) == n:
                break
    return records


def naive(records, llm: LlmSettings) -> tuple[float, list[dict]]:
    from llama_cpp import Llama

    prompt = load_prompt(PROMPT)
    model = Llama(model_path=resolve_model_path(llm), n_ctx=N_CTX, n_threads=llm.n_threads or None,
                  seed=llm.seed, verbose=False)
    schema = {"type": "object", "properties": {name: {"type": "string"} for name in LABEL_FIELDS},
              "required": list(LABEL_FIELDS)}
    answers = []
    start = time.perf_counter()
    for label, data in records:
        user, _ = render_user(prompt, label, data, llm.max_input_chars)
        out = model.create_chat_completion(
            messages=[{"role": "system", "content": prompt.system}, {"role": "user", "content": user}],
            response_format={"type": "json_object", "schema": schema},
            temperature=0.0, max_tokens=sum(prompt.max_tokens.values()) + 64,
        )
        try:
            answers.append(json.loads(out["choices"][0]["message"]["content"]))
        except json.JSONDecodeError:
            answers.append({})  # cut at max_tokens: counted as labelled, like a failure would be
    return time.perf_counter() - start, answers


async def ours(records, llm: LlmSettings) -> tuple[float, list[dict], dict]:
    engine = LabelEngine(llm, load_prompt(PROMPT))
    await engine.start()
    start = time.perf_counter()
    results = await asyncio.gather(*(engine.label(label, data) for label, data in records))
    elapsed = time.perf_counter() - start
    await engine.close()
    return elapsed, [r.fields or {} for r in results], engine.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=int, default=3, help="records for the naive loop")
    parser.add_argument("--records", type=int, default=24, help="records for ilid-async")
    parser.add_argument("--parallel", type=int, default=8, help="llm.n_parallel")
    parser.add_argument("--threads", type=int, default=0, help="llm.n_threads (0 = llama.cpp's choice)")
    args = parser.parse_args()
    llm = LlmSettings(n_ctx=N_CTX, n_parallel=args.parallel, n_threads=args.threads)
    records = demo_records(max(args.baseline, args.records))
    peer_s, peer_answers = naive(records[:args.baseline], llm)
    ours_s, our_answers, stats = asyncio.run(ours(records[:args.records], llm))
    print(f"naive answers parsed: {sum(bool(a) for a in peer_answers)}/{len(peer_answers)}; "
          f"ilid-async failed: {stats['failed']}/{len(our_answers)}")
    print(f"ilid-async label quality: {label_quality(a for a in our_answers if a)}")
    peer_rate, ours_rate = args.baseline / peer_s, args.records / ours_s
    print(f"{'naive llama-cpp-python':<22}: {args.baseline} records in {peer_s:.1f} s = {peer_rate:.3f} records/s")
    print(f"{'ilid-async':<22}: {args.records} records in {ours_s:.1f} s = {ours_rate:.3f} records/s")
    print(f"ratio ilid-async / naive llama-cpp-python: {ours_rate / peer_rate:.2f}x")


if __name__ == "__main__":
    main()
