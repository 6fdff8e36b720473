"""Serve the demo shop until Ctrl-C: ``python -m ilid_async.demo [--port 8642] [--products 320]``.

Handy when writing or debugging a shop file: point a browser or the crawler at the printed URL.
"""

from __future__ import annotations

import argparse
import asyncio

from ilid_async.cli import run_event_loop
from ilid_async.demo.server import start_demo_server

__all__ = ["main"]


async def _serve(host: str, port: int, products: int, seed: int, prerender: bool) -> None:
    server = await start_demo_server(host=host, port=port, n_products=products, seed=seed,
                                     prerender=prerender)
    cat = server.catalogue
    print(f"Demo shop serving {len(cat.products)} products at {server.base_url}", flush=True)
    print(f"  robots.txt:    {server.base_url}/robots.txt")
    print(f"  sitemap index: {server.base_url}/sitemap_index.xml.gz")
    print(f"  shop file:     shops/demo.toml ({{demo}} = {server.base_url})")
    print("Press Ctrl-C to stop.", flush=True)
    try:
        await asyncio.Event().wait()  # serve until cancelled by Ctrl-C
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ilid_async.demo",
                                     description="Serve the offline demo web shop.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8642,
                        help="port, 0 for any free one (default 8642)")
    parser.add_argument("--products", type=int, default=320,
                        help="number of products (default 320)")
    parser.add_argument("--seed", type=int, default=7, help="catalogue seed (default 7)")
    parser.add_argument("--prerender", action="store_true",
                        help="render every product page at start, as a page cache would "
                             "(for benchmarks: the server then costs little per page)")
    args = parser.parse_args(argv)
    try:
        run_event_loop(_serve(args.host, args.port, args.products, args.seed, args.prerender))
    except KeyboardInterrupt:
        print("\nStopped.")


if __name__ == "__main__":
    main()
