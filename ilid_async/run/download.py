"""`ilid-async download`: the original downloader's command line (rules §6) for people who have
ILID's metadata file and only want the images. Same fetch layer and image transform as `run`."""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ilid_async import reasons
from ilid_async.config import HttpSettings
from ilid_async.output.dataset import read_dataset, safe_join, write_json_atomic
from ilid_async.errors import ItemError, UserError
from ilid_async.crawl.http import HttpClient
from ilid_async.images.fetch import download_image
from ilid_async.images.transform import ENCODERS, Encoding, ImageError, image_pool
from ilid_async.run.progress import LIVE_REFRESH, RateWindow, StageProgress, is_terminal
from ilid_async.run.database import disk_full_message
from ilid_async.workers import RestartingPool

__all__ = [
    "MAX_NAME_BYTES", "TEMP_NAME_BYTES", "IMAGE_ENDINGS", "SYNC_INTERVAL", "DownloadReport", "image_file", "DownloadProgress",
    "download_dataset"
]

# Most file systems cap one name at 255 bytes, and an image is written through a temp file
# ".<name>.XXXXXXXX.tmp" beside it (images._write_atomic): a longer name fails only its entry.
MAX_NAME_BYTES = 255
TEMP_NAME_BYTES = 14
# Endings of an `image` value that --format jpeg / webp replace (ILID's are all .png); any other
# ending is kept and the format's is added after it.
IMAGE_ENDINGS = frozenset({"png", "jpg", "jpeg", "webp"})


@dataclass
class DownloadReport:
    total: int = 0
    downloaded: int = 0
    skipped_existing: int = 0
    failed: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1

    @property
    def done(self) -> int:
        """Entries finished: downloaded, kept or failed."""
        return self.downloaded + self.skipped_existing + sum(self.failed.values())


def image_file(image: str, encoding: Encoding | None) -> str:
    """The file written for a dataset ``image`` value. PNG (the default, rules §6) writes the value
    as it is; JPEG and WebP write it with its image ending (``.png``, ``.jpg``, ``.jpeg``,
    ``.webp``) replaced by the format's (``.jpg``, ``.webp``), or the format's added when it has
    none, so a file's ending always says its format."""
    if encoding is None or encoding.format == "png":
        return image
    ending = ENCODERS[encoding.format][1]
    folder, name = posixpath.split(image)
    stem, old = posixpath.splitext(name)
    if old[1:].lower() in IMAGE_ENDINGS:
        name = stem
    return posixpath.join(folder, f"{name}.{ending}") if name else image


class DownloadProgress:
    """The download's progress in `run`'s style: on a terminal one live line, redrawn every
    second; elsewhere a plain ``progress [...] download: ...`` line every ``interval`` seconds
    and a last one with the final counts. ``interval`` 0 = none."""

    def __init__(self, report: DownloadReport, interval: float, stream: TextIO | None = None,
                 live: bool | None = None, clock=time.monotonic):
        self.report = report
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self._rate = RateWindow([(self.started, 0)])  # the first line has a rate
        self._line_open = False  # a live line is drawn and not ended
        self.live = is_terminal(self.stream) if live is None else live

    def line(self, finished: bool = False) -> str:
        now, done = self.clock(), self.report.done
        stage = StageProgress("download", done, self.report.total, sum(self.report.failed.values()),
                              self._rate.rate(now, done), finished)
        return f"progress [{now - self.started:6.0f}s] {stage.line()}"

    async def run(self) -> None:
        """Report until cancelled."""
        if self.interval <= 0:
            return
        while True:
            await asyncio.sleep(LIVE_REFRESH if self.live else self.interval)
            self._print(self.line())

    def finish(self) -> None:
        """The last line, with the final counts."""
        if self.interval > 0:
            self._print(self.line(finished=True), last=True)

    def close(self) -> None:
        """End a live line left open (the download stopped), so an error starts a new line."""
        if self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False

    def _print(self, line: str, last: bool = False) -> None:
        if self.live:  # one line, redrawn in place; the last one stays
            self.stream.write("\r\x1b[K" + line + ("\n" if last else ""))
            self.stream.flush()
            self._line_open = not last
        else:
            print(line, file=self.stream, flush=True)


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
    progress_interval: float = 0.0,
    progress_stream: TextIO | None = None,
    pool: Executor | None = None,
) -> DownloadReport:
    """rules §6: download, fit and write the image of every entry of ``dataset_file`` under
    ``folder`` (see ``image_file`` for the file names of JPEG and WebP), then write the entries
    whose image exists, their ``image`` naming the file written, to ``dataset_downloaded`` (or
    over ``dataset_file``). ``progress_interval`` > 0 reports progress on ``progress_stream``
    (stderr), see DownloadProgress. ``pool``: a pool for transform_image that the caller made
    (and shuts down); by default one of ``workers`` processes, made and shut down here."""
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
    own_pool = pool is None
    if pool is None:
        pool = RestartingPool(lambda: image_pool(workers))  # a dead worker costs no image
    slots = asyncio.Semaphore(settings.concurrency)
    disk_full: list[str] = []  # set: no new entry starts, and the command stops with one line
    targets: dict[int, Path] = {}  # entry index -> its checked file path, for the dataset file

    async def one(index: int, entry: dict) -> None:
        image = image_file(str(entry.get("image", "")), encoding)
        try:
            target = safe_join(folder, image)
        except ValueError:
            report.fail(reasons.UNSAFE_PATH)
            return
        targets[index] = target
        if _name_too_long(image):
            report.fail(reasons.NAME_TOO_LONG)
            return
        try:
            if _kept(target) and not replace:
                report.skipped_existing += 1
                return
            async with slots:
                if disk_full:
                    return
                await download_image(http, pool, str(entry.get("url", "")), target, width=width,
                                     height=height, max_pixels=max_pixels, encoding=encoding,
                                     max_bytes=settings.max_image_bytes, durable=False)
        except (ItemError, ImageError) as e:
            if e.reason == reasons.DISK_FULL:  # the disk's fault, not the entry's: not counted
                disk_full.append(e.detail)
                return
            report.fail(e.reason)
            return
        except OSError as e:  # a file system with a shorter limit than the check above knows
            if e.errno != errno.ENAMETOOLONG:
                raise
            report.fail(reasons.NAME_TOO_LONG)
            return
        report.downloaded += 1

    progress = DownloadProgress(report, progress_interval, progress_stream)
    reporter = asyncio.ensure_future(progress.run())
    syncer = asyncio.ensure_future(_sync_meanwhile())
    try:
        async with HttpClient(settings) as http:
            await asyncio.gather(*(one(i, e) for i, e in enumerate(entries)))
    finally:
        reporter.cancel()
        syncer.cancel()
        progress.close()
        if own_pool:
            pool.shutdown(cancel_futures=True)
    if disk_full:
        # The images written so far are whole (written to a temporary name, then renamed) and
        # are kept by the next run of the same command; the dataset file is left as it was.
        raise UserError(disk_full_message(folder, disk_full[0]))

    progress.finish()
    # One sync for all images, before the file that names them: an fsync per image held its
    # worker up for the disk and cost 8% of the images/s (bench_images). A power cut before
    # this leaves whole images, or empty files that the next run writes again (_kept).
    if hasattr(os, "sync"):
        await asyncio.to_thread(os.sync)

    # rules §6: the entries whose image exists, to a second file or over the input file; with
    # JPEG or WebP their `image` names the file written (image_file). The paths are the ones
    # checked above (resolving each again cost 0.45 ms an entry, after all the images).
    def downloaded() -> Iterator[dict]:
        for index, entry in enumerate(entries):
            target = targets.get(index)  # None: an unsafe path
            try:
                if target is None or not target.is_file():
                    continue
            except OSError:  # a name the file system refuses
                continue
            image = image_file(str(entry.get("image", "")), encoding)
            yield entry if image == str(entry.get("image", "")) else {**entry, "image": image}

    write_json_atomic(dataset_downloaded or dataset_file, downloaded())
    return report


# While images are written, the disk takes what is written so far every few seconds, so the
# sync after the last image waits for a few seconds' images instead of all of them (on 2 cores
# it held the command up for 0.15-0.2 s after 1,000 images, with the processors idle).
SYNC_INTERVAL = 2.0


async def _sync_meanwhile() -> None:
    if not hasattr(os, "sync"):
        return
    while True:
        await asyncio.sleep(SYNC_INTERVAL)
        await asyncio.to_thread(os.sync)


def _kept(target: Path) -> bool:
    """An image a run before wrote: not written again without --replace. An empty file is
    what a power cut leaves of an image whose data had not reached the disk yet."""
    try:
        return target.stat().st_size > 0
    except OSError as e:  # as Path.exists: missing, or a file where a folder should be
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return False
        raise


def _name_too_long(relative: str) -> bool:
    *folders, name = relative.split("/")
    return (len(os.fsencode(name)) + TEMP_NAME_BYTES > MAX_NAME_BYTES
            or any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in folders))
