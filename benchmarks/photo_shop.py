"""A loopback photo shop for the image benchmarks: a photo set generated with a fixed seed
(not picked to suit any downloader) and a plain HTTP server for it in its own process.

The photos: sides drawn at random from 250 to 2000 pixels (landscape, portrait and square;
about one in seven is an exact 250x250 catalogue thumbnail), content like a product photo
(a two-colour gradient backdrop at a random angle, soft-edged shapes, mild Gaussian noise, so
the encoded sizes are those of photos, not of flat synthetic art), formats mixed: baseline
JPEG, progressive JPEG, PNG (RGB and RGBA cut-outs) and lossy WebP, at varied qualities.

    python benchmarks/photo_shop.py serve FOLDER PORT   # serves FOLDER/* at /img/<name>

Used by bench_images.py: ``generate(folder, n)`` writes the set once before any timing, then
``serve`` runs in a child process (its CPU is not the measured process's).
"""

from __future__ import annotations

import math
import os
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SEED = 14  # issue 14
CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
# (kind, share): what a mixed shop catalogue serves
FORMATS = (("jpeg", 0.35), ("jpeg-progressive", 0.20), ("png", 0.12), ("png-rgba", 0.10), ("webp", 0.23))
THUMBNAIL_SHARE = 0.15
MIN_SIDE, MAX_SIDE = 250, 2000
NOISE_SIGMA = 4.0  # mild sensor noise, in 8-bit levels


def plan(n: int, seed: int = SEED) -> list[tuple[str, int, int, str, int]]:
    """(file name, width, height, kind, photo seed) for n photos; the same for the same seed."""
    rng = random.Random(seed)
    kinds, shares = zip(*FORMATS)
    photos = []
    for i in range(n):
        if rng.random() < THUMBNAIL_SHARE:
            w = h = 250
        elif rng.random() < 0.25:
            w = h = rng.randint(MIN_SIDE, MAX_SIDE)
        else:
            w, h = rng.randint(MIN_SIDE, MAX_SIDE), rng.randint(MIN_SIDE, MAX_SIDE)
        kind = rng.choices(kinds, shares)[0]
        ending = {"jpeg": "jpg", "jpeg-progressive": "jpg", "png": "png", "png-rgba": "png", "webp": "webp"}[kind]
        photos.append((f"p{i:05d}_{w}x{h}.{ending}", w, h, kind, rng.randrange(2**31)))
    return photos


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randint(0, 255) for _ in range(3))


def render(w: int, h: int, kind: str, seed: int) -> bytes:
    """One encoded photo."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    # Draw at half size and scale up: soft edges like a lens makes, and quicker.
    sw, sh = max(1, w // 2), max(1, h // 2)
    mask = Image.linear_gradient("L").rotate(rng.uniform(0, 360), resample=Image.BICUBIC, expand=False)
    mask = mask.resize((sw, sh), Image.BILINEAR)
    img = Image.composite(Image.new("RGB", (sw, sh), _colour(rng)), Image.new("RGB", (sw, sh), _colour(rng)), mask)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 9)):
        x0, y0 = rng.uniform(-0.2, 0.9) * sw, rng.uniform(-0.2, 0.9) * sh
        x1, y1 = x0 + rng.uniform(0.05, 0.6) * sw, y0 + rng.uniform(0.05, 0.6) * sh
        shape = rng.random()
        if shape < 0.4:
            draw.ellipse((x0, y0, x1, y1), fill=_colour(rng))
        elif shape < 0.7:
            draw.rounded_rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                                   radius=rng.uniform(0, 0.1) * min(sw, sh), fill=_colour(rng))
        else:
            cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
            k = rng.randint(3, 7)
            draw.polygon([(cx + r * math.cos(2 * math.pi * j / k + rng.random()),
                           cy + r * math.sin(2 * math.pi * j / k + rng.random())) for j in range(k)],
                         fill=_colour(rng))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))).resize((w, h), Image.BICUBIC)
    noise = np.random.default_rng(seed).standard_normal((h, w, 1), dtype=np.float32)
    pixels = np.asarray(img, dtype=np.float32) + NOISE_SIGMA * noise  # the same noise on all channels: luma noise
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")

    out = io.BytesIO()
    if kind == "jpeg":
        img.save(out, "JPEG", quality=rng.randint(75, 95))
    elif kind == "jpeg-progressive":
        img.save(out, "JPEG", quality=rng.randint(75, 95), progressive=True, optimize=True)
    elif kind == "webp":
        img.save(out, "WEBP", quality=rng.randint(70, 90), method=2)
    else:
        if kind == "png-rgba":  # a cut-out: the product on a transparent ground, soft edge
            alpha = Image.new("L", (sw, sh), 0)
            ImageDraw.Draw(alpha).ellipse((sw * 0.1, sh * 0.08, sw * 0.9, sh * 0.92), fill=255)
            img.putalpha(alpha.filter(ImageFilter.GaussianBlur(2)).resize((w, h), Image.BILINEAR))
        img.save(out, "PNG", compress_level=3)
    return out.getvalue()


def _write(folder: str, photo: tuple[str, int, int, str, int]) -> int:
    name, w, h, kind, seed = photo
    data = render(w, h, kind, seed)
    Path(folder, name).write_bytes(data)
    return len(data)


def generate(folder: Path, n: int, workers: int | None = None, seed: int = SEED) -> list[str]:
    """Write n photos into folder; returns their file names in URL order."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = plan(n, seed)
    with ProcessPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(_write, [str(folder)] * len(photos), photos, chunksize=4))
    return [p[0] for p in photos]


def describe(folder: Path, names: list[str]) -> str:
    """One line: how many of each format, thumbnails, mean megapixels, mean size."""
    counts: dict[str, int] = {}
    pixels = size = thumbs = 0
    for name, w, h, kind, _ in plan(len(names)):
        counts[kind] = counts.get(kind, 0) + 1
        pixels += w * h
        thumbs += (w, h) == (250, 250)
        size += (folder / name).stat().st_size
    n = max(1, len(names))
    kinds = ", ".join(f"{k} {v}" for k, v in counts.items())
    return (f"{len(names)} photos (seed {SEED}): {kinds}; {thumbs} thumbnails 250x250; "
            f"mean {pixels / n / 1e6:.2f} MP, {size / n / 1024:.0f} KiB")


def serve(folder: Path, port: int) -> None:
    """Serve folder's files at /img/<name> on 127.0.0.1:port from memory; prints one line when
    listening."""
    from aiohttp import web

    bodies = {p.name: (p.read_bytes(), CONTENT_TYPES.get(p.suffix, "application/octet-stream"))
              for p in folder.iterdir() if p.is_file()}

    async def image(request: web.Request) -> web.Response:
        found = bodies.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], content_type=found[1])

    async def started(_app: web.Application) -> None:
        print(f"listening on 127.0.0.1:{port}", flush=True)

    app = web.Application()
    app.router.add_get("/img/{name}", image)
    app.on_startup.append(started)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "serve":
        sys.exit("usage: photo_shop.py serve FOLDER PORT")
    serve(Path(sys.argv[2]), int(sys.argv[3]))
