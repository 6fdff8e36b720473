"""`ilid-async download`: the original downloader's command line (SPEC 6) for people who have
ILID's metadata file and only want the images. Same fetch layer and image transform as `run`."""

from __future__ import annotations

import asyncio
import errno
import os
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from .config import HttpSettings
from .dataset import read_dataset, safe_join, write_json_atomic
from .errors import ItemError, UserError
from .http import HttpClient
from .images import REASON_DISK_FULL, Encoding, ImageError, ImageResult, image_pool, transform_image
from .workers import RestartingPool

# Most file systems cap one name at 255 bytes, and an image is written through a temp file
# ".<name>.XXXXXXXX.tmp" beside it (images._write_atomic): a longer name fails only its entry.
MAX_NAME_BYTES = 255
TEMP_NAME_BYTES = 14


@dataclass
class DownloadReport:
    total: int = 0
    downloaded: int = 0
    skipped_existing: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1


async def download_image(http: HttpClient, pool: Executor, url: str, target: Path, *, width: int,
                         height: int, max_pixels: int, encoding: Encoding | None = None,
                         max_bytes: int, check_robots: bool = False) -> ImageResult:
    """SPEC 6 for one image: GET it, keep it only if 200 and an image content type, then fit,
    pad and write it (PNG unless ``encoding`` says otherwise) in the pool. The pool worker
    writes the file itself: only the small result comes back. Raises ItemError / ImageError
    with the reason."""
    resp = await http.get(url, max_bytes=max_bytes, check_robots=check_robots)
    if resp.status != 200:
        raise ItemError(f"http_{resp.status}")
    if resp.content_type.split("/", 1)[0] != "image":
        raise ItemError("not_image_content_type", resp.content_type)
    return await asyncio.get_running_loop().run_in_executor(
        pool, transform_image, resp.body, str(target), width, height, max_pixels, encoding)


async def download_dataset(
    dataset_file: str | Path,
    folder: str | Path,
    *,
    width: int = 512,
    height: int = 512,
    replace: bool = False,
    dataset_downloaded: str | Path | None = None,
    http_settings: HttpSettings | None = None,
    workers: int = 0,
    max_pixels: int = 50_000_000,
    encoding: Encoding | None = None,
) -> DownloadReport:
    try:
        entries = read_dataset(dataset_file)
    except FileNotFoundError:
        raise UserError(f"{dataset_file}: dataset file not found") from None
    except ValueError as e:
        raise UserError(str(e)) from None
    settings = http_settings or HttpSettings()
    report = DownloadReport(total=len(entries))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pool = RestartingPool(lambda: image_pool(workers))  # a dead worker costs no image
    slots = asyncio.Semaphore(settings.concurrency)
    disk_full: list[str] = []  # set: no new entry starts, and the command stops with one line

    async def one(entry: dict) -> None:
        image = str(entry.get("image", ""))
        try:
            target = safe_join(folder, image)
        except ValueError:
            report.fail("unsafe_path")
            return
        if _name_too_long(image):
            report.fail("name_too_long")
            return
        try:
            if target.exists() and not replace:
                report.skipped_existing += 1
                return
            async with slots:
                if disk_full:
                    return
                await download_image(http, pool, str(entry.get("url", "")), target, width=width,
                                     height=height, max_pixels=max_pixels, encoding=encoding,
                                     max_bytes=settings.max_image_bytes)
        except (ItemError, ImageError) as e:
            if e.reason == REASON_DISK_FULL:  # the disk's fault, not the entry's: not counted
                disk_full.append(e.detail)
                return
            report.fail(e.reason)
            return
        except OSError as e:  # a file system with a shorter limit than the check above knows
            if e.errno != errno.ENAMETOOLONG:
                raise
            report.fail("name_too_long")
            return
        report.downloaded += 1

    try:
        async with HttpClient(settings) as http:
            await asyncio.gather(*(one(e) for e in entries))
    finally:
        pool.shutdown(cancel_futures=True)
    if disk_full:
        # The images written so far are whole (written to a temporary name, then renamed) and
        # are kept by the next run of the same command; the dataset file is left as it was.
        raise UserError(f"{folder}: disk full ({disk_full[0]}); the images written so far are kept, "
                        "run the command again when there is room")

    # SPEC 6: the entries whose image exists, to a second file or over the input file.
    def has_image(entry: dict) -> bool:
        try:
            return safe_join(folder, str(entry.get("image", ""))).is_file()
        except (ValueError, OSError):  # unsafe, or a name the file system refuses
            return False

    write_json_atomic(dataset_downloaded or dataset_file, (e for e in entries if has_image(e)))
    return report


def _name_too_long(relative: str) -> bool:
    *folders, name = relative.split("/")
    return (len(os.fsencode(name)) + TEMP_NAME_BYTES > MAX_NAME_BYTES
            or any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in folders))
