"""The image step of `run` and `download`: GET one image URL, keep it only if the answer is an
image, and fit, pad and write it in the image pool (images.transform_image)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from pathlib import Path

from ilid_async import reasons
from ilid_async.errors import ItemError
from ilid_async.crawl.http import HttpClient
from ilid_async.images.transform import Encoding, ImageResult, transform_image

__all__ = ["download_image"]


async def download_image(http: HttpClient, pool: Executor, url: str, target: Path, *, width: int,
                         height: int, max_pixels: int, encoding: Encoding | None = None,
                         max_bytes: int, check_robots: bool = False, durable: bool = True) -> ImageResult:
    """rules §6 for one image: GET it, keep it only if 200 and an image content type, then fit,
    pad and write it (PNG unless ``encoding`` says otherwise) in the pool. The pool worker
    writes the file itself, atomically, and fsyncs it unless not ``durable`` (download_dataset
    syncs once at the end): only the small result comes back. Raises ItemError / ImageError
    with the reason."""
    resp = await http.get(url, max_bytes=max_bytes, check_robots=check_robots)
    resp.raise_for_status()
    if resp.content_type.split("/", 1)[0] != "image":
        raise ItemError(reasons.NOT_IMAGE_CONTENT_TYPE, resp.content_type)
    return await asyncio.get_running_loop().run_in_executor(
        pool, transform_image, resp.body, str(target), width, height, max_pixels, encoding, durable)
