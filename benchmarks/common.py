"""What the benchmarks share: a crawl config for the demo shop written into a folder."""

from __future__ import annotations

import socket
from pathlib import Path

from ilid_async.config import PACKAGED_PROMPT

REPO = Path(__file__).resolve().parent.parent
PROMPT = PACKAGED_PROMPT  # what a config without llm.prompt uses

# The demo shop's selectors (shops/demo.toml without the comments), for a shop at {base}.
DEMO_SHOP = """source = "{name}"
robots_urls = ["{base}/robots.txt"]
sitemap_rules = [["/p/", "product"]]
image_endings = [".jpg", ".jpeg", ".png"]
[selectors]
product = "div.product-detail"
image = "div.gallery img"
label = "h1.product-title"
data = "div.product-info"
"""


def write_crawl_config(folder: Path, shops: dict[str, str], http: str) -> Path:
    """config.toml in folder for shops {name: base URL}; ``http`` holds the [http] tables."""
    for name, base in shops.items():
        (folder / f"{name}.toml").write_text(DEMO_SHOP.format(name=name, base=base))
    config = folder / "config.toml"
    names = ", ".join(f'"{name}.toml"' for name in shops)
    config.write_text(f'[run]\ndir = "run"\nshops = [{names}]\n{http}')
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report_ratio(what: str, unit: str, peer: str, peer_count: int, peer_s: float, ours_count: int,
                 ours_s: float) -> None:
    peer_rate, ours_rate = peer_count / peer_s, ours_count / ours_s
    print(f"{peer:<22}: {peer_count} {what} in {peer_s:.1f} s = {peer_rate:.1f} {unit}")
    print(f"{'ilid-async':<22}: {ours_count} {what} in {ours_s:.1f} s = {ours_rate:.1f} {unit}")
    print(f"ratio ilid-async / {peer}: {ours_rate / peer_rate:.2f}x")
