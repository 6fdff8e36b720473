"""Image download throughput: the original sequential downloader's way vs `ilid-async download`.

Both fetch the same image URLs from the bundled demo shop on loopback, fit them into 512x512
with edge padding and write PNGs. The baseline does what the original download.py did: one
image at a time, fetch, decode, resize, pad, save. Prints images/s of both and the ratio.

    .venv/bin/python benchmarks/bench_download.py [--images 300]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from PIL import Image

from common import report_ratio
from ilid_async.config import HttpSettings
from ilid_async.output.dataset import DATASET_KEYS
from ilid_async.demo.catalogue import build_catalogue
from ilid_async.demo.server import start_demo_server
from ilid_async.run.download import download_dataset
from ilid_async.images.transform import fit_size, pad_edge, to_rgb


def baseline_download(entries: list[dict], folder: Path, size: int = 512, compress_level: int = 6) -> int:
    """One image at a time, as the original sequential downloader did."""
    done = 0
    for entry in entries:
        with urllib.request.urlopen(entry["url"], timeout=30) as resp:
            if resp.status != 200 or not resp.headers.get("Content-Type", "").startswith("image/"):
                continue
            data = resp.read()
        img = to_rgb(Image.open(io.BytesIO(data)))
        img = img.resize(fit_size(*img.size, size, size), Image.BOX)
        target = folder / entry["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        pad_edge(img, size, size).save(target, "PNG", compress_level=compress_level)
        done += 1
    return done


async def main(n_images: int) -> None:
    server = await start_demo_server(port=0)
    try:
        catalogue = build_catalogue()
        urls = []
        for product in catalogue.products:
            for image in product.images:
                if not image.name.endswith(".svg"):
                    urls.append(f"{server.base_url}/img/{image.name}")
        urls = list(dict.fromkeys(urls))[:n_images]
        entries = [dict(zip(DATASET_KEYS, [f"id{i}", f"part/id{i}.png", u, "part", "part", None, None, None,
                                           "demo"])) for i, u in enumerate(urls)]
        # Warm the server's image cache so both sides measure the client, not the shop.
        await asyncio.to_thread(lambda: [urllib.request.urlopen(u).read() for u in urls])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            dataset = tmp / "ilid.json"
            dataset.write_bytes(orjson.dumps(entries))
            started = time.perf_counter()
            n_base = await asyncio.to_thread(baseline_download, entries, tmp / "baseline")
            base_s = time.perf_counter() - started
            started = time.perf_counter()
            report = await download_dataset(dataset, tmp / "ours", dataset_downloaded=tmp / "out.json",
                                            http_settings=HttpSettings(allow_loopback=True, per_host_rate=0,
                                                                       per_host_concurrency=32))
            ours_s = time.perf_counter() - started
    finally:
        await server.close()
    print(f"images: {len(urls)}  (Pillow {Image.__version__})")
    report_ratio("images", "images/s", "sequential baseline", n_base, base_s, report.downloaded, ours_s)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    asyncio.run(main(parser.parse_args().images))
