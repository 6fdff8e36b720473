"""Image download + resize throughput: img2dataset, the original sequential downloader, and
ilid-async, on the same product photos from the same loopback shop, in one command.

The demo shop (its own process, images rendered once before timing) serves JPEG photos from
250x250 to 2000x2000 and PNG cut-outs with transparency. Every contender fetches the same URL
list and writes 512x512 PNGs at zlib level 1 with a border (img2dataset's "border" mode pads
with a colour, ours repeats the edge pixels):

- img2dataset: processes = cores, 32 threads each, output_format files
- sequential: the original downloader's way, one image at a time
- ilid-async: `ilid_async.download.download_dataset` (the `download` command), pool = cores

It also measures the single-process limit: decode + fit + pad + encode of the same images,
one after another in this process, times the core count; ilid-async's share of that is the
figure to watch (the network and the event loop cost the rest).

    python3.11 -m venv .venv-img2dataset && .venv-img2dataset/bin/pip install img2dataset
    .venv/bin/python benchmarks/bench_images.py [--images 800] [--img2dataset .venv-img2dataset/bin/img2dataset]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, free_port

# The image pool's workers are spawned and import this module again (as __mp_main__): only the
# benchmark itself needs these, and the workers should start as lightly as under the
# ilid-async command, whose main module imports next to nothing.
if __name__ == "__main__":
    import orjson
    import PIL

    from bench_download import baseline_download
    from ilid_async.config import HttpSettings
    from ilid_async.dataset import DATASET_KEYS
    from ilid_async.demo.catalogue import build_catalogue
    from ilid_async.download import download_dataset
    from ilid_async.images import Encoding, transform_image

PNG_LEVEL = 1


def pillow_flavour() -> str:
    # pillow-simd reports versions like "9.5.0.post2" and is installed as "Pillow-SIMD".
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pillow-simd {version('Pillow-SIMD')}"
    except PackageNotFoundError:
        return f"Pillow {PIL.__version__}"


def image_urls(base: str, n: int, products: int) -> list[str]:
    urls = [f"{base}/img/{image.name}" for product in build_catalogue(products).products
            for image in product.images if image.format != "SVG"]
    return list(dict.fromkeys(urls))[:n]


def fetch_all(urls: list[str]) -> list[bytes]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda u: urllib.request.urlopen(u, timeout=60).read(), urls))


def single_process_rate(bodies: list[bytes], folder: Path) -> float:
    """Images/s of decode + resize + pad + PNG encode, one after another, in this process."""
    folder.mkdir()
    started = time.perf_counter()
    for i, body in enumerate(bodies):
        transform_image(body, str(folder / f"{i}.png"), 512, 512, encoding=Encoding(png_compress_level=PNG_LEVEL))
    return len(bodies) / (time.perf_counter() - started)


def run_img2dataset(command: str, urls: list[str], folder: Path) -> tuple[int, float]:
    folder.mkdir()
    (folder / "urls.txt").write_text("\n".join(urls) + "\n")
    started = time.perf_counter()
    subprocess.run([command, "--url_list", str(folder / "urls.txt"), "--input_format", "txt",
                    "--output_folder", str(folder / "out"), "--output_format", "files",
                    "--processes_count", str(os.cpu_count()), "--thread_count", "32",
                    "--image_size", "512", "--resize_mode", "border", "--encode_format", "png",
                    "--encode_quality", str(PNG_LEVEL), "--number_sample_per_shard", "10000",
                    "--disable_all_reencoding", "False", "--enable_wandb", "False",
                    "--disallowed_header_directives", "[]"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return len(list((folder / "out").rglob("*.png"))), seconds


def main(n_images: int, img2dataset: str | None) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    products = max(320, n_images)
    server = subprocess.Popen([sys.executable, "-m", "ilid_async.demo", "--port", str(port),
                               "--products", str(products)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        server.stdout.readline()  # listening
        urls = image_urls(base, n_images, products)
        bodies = fetch_all(urls)  # renders every image once in the server: later fetches are cheap
        results: dict[str, tuple[int, float]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            limit = single_process_rate(bodies, tmp / "limit")

            if img2dataset:
                results["img2dataset"] = run_img2dataset(img2dataset, urls, tmp / "img2dataset")

            entries = [dict(zip(DATASET_KEYS, [f"id{i}", f"part/id{i}.png", u, "part", "part", None, None,
                                               None, "demo"])) for i, u in enumerate(urls)]
            started = time.perf_counter()
            done = baseline_download(entries, tmp / "sequential", compress_level=PNG_LEVEL)
            results["sequential"] = (done, time.perf_counter() - started)

            dataset = tmp / "ilid.json"
            dataset.write_bytes(orjson.dumps(entries))
            settings = HttpSettings(allow_loopback=True, per_host_rate=0, per_host_concurrency=32,
                                    concurrency=64)
            started = time.perf_counter()
            report = asyncio.run(download_dataset(dataset, tmp / "ours", dataset_downloaded=tmp / "out.json",
                                                  http_settings=settings,
                                                  encoding=Encoding(png_compress_level=PNG_LEVEL)))
            results["ilid-async"] = (report.downloaded, time.perf_counter() - started)
            shutil.rmtree(tmp / "ours")
    finally:
        server.terminate()
        server.wait()

    cores = os.cpu_count() or 1
    print(f"images: {len(urls)} ({pillow_flavour()}, {cores} cores, PNG level {PNG_LEVEL}, 512x512)")
    rates = {name: count / seconds for name, (count, seconds) in results.items()}
    for name, (count, seconds) in results.items():
        print(f"{name:<13}: {count} images in {seconds:.1f} s = {rates[name]:.1f} images/s")
    ours = rates["ilid-async"]
    for peer in ("img2dataset", "sequential"):
        if peer in rates:
            print(f"ratio ilid-async / {peer}: {ours / rates[peer]:.2f}x")
    if "img2dataset" not in rates:
        print("img2dataset: not run (pass --img2dataset PATH to its command)")
    print(f"single-process limit: {limit:.1f} images/s x {cores} cores = {limit * cores:.1f} images/s; "
          f"ilid-async reaches {ours / (limit * cores):.0%} of it")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    default_peer = REPO / ".venv-img2dataset" / "bin" / "img2dataset"
    parser.add_argument("--img2dataset", default=str(default_peer) if default_peer.exists() else None,
                        help="path of the img2dataset command (default: .venv-img2dataset/bin/img2dataset)")
    args = parser.parse_args()
    main(args.images, args.img2dataset)
