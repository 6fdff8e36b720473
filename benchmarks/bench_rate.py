"""Per-host rate limits in a real crawl: achieved vs configured requests per second.

Serves the bundled demo shop on two loopback addresses (127.0.0.1 and 127.0.0.2) as two shops,
gives each host its own limit, runs ilid-async's crawl stage over both for a while, and measures
each host's rate from the demo servers' own request logs.

    .venv/bin/python benchmarks/bench_rate.py [--rate-a 20] [--rate-b 8] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from common import write_crawl_config
from ilid_async.config import load_config
from ilid_async.demo.server import start_demo_server
from ilid_async.run.pipeline import Pipeline

HTTP = """[http]
allow_loopback = true
concurrency = 64
per_host_concurrency = 16
[http.hosts."127.0.0.1"]
rate = {rate_a}
[http.hosts."127.0.0.2"]
rate = {rate_b}
"""


def busiest_second(stamps: list[float]) -> int:
    return max((sum(1 for t in stamps[i:] if t < s + 1.0) for i, s in enumerate(stamps)), default=0)


async def main(rate_a: float, rate_b: float, seconds: float) -> None:
    servers = [await start_demo_server("127.0.0.1", 0, n_products=2000),
               await start_demo_server("127.0.0.2", 0, n_products=2000)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            config = write_crawl_config(tmp, {"a": servers[0].base_url, "b": servers[1].base_url},
                                        HTTP.format(rate_a=rate_a, rate_b=rate_b))
            pipeline = Pipeline(load_config(config), ["crawl"], progress_interval=3600)
            try:
                await asyncio.wait_for(pipeline.run(), timeout=seconds)
            except asyncio.TimeoutError:
                pass  # the crawl is cut short on purpose: we measure its steady rate
            finally:
                pipeline.store.close()
    finally:
        for server in servers:
            await server.close()
    print(f"{'host':<12}{'configured/s':>14}{'achieved/s':>12}{'requests':>10}{'busiest 1 s':>13}")
    for server, rate in zip(servers, (rate_a, rate_b)):
        stamps = sorted(t for t, _ in server.request_log)
        achieved = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        print(f"{server.host:<12}{rate:>14.1f}{achieved:>12.2f}{len(stamps):>10}{busiest_second(stamps):>13}"
              f"   ({achieved / rate:.0%} of configured)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate-a", type=float, default=20.0)
    parser.add_argument("--rate-b", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    asyncio.run(main(args.rate_a, args.rate_b, args.seconds))
