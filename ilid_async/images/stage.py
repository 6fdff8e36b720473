"""The image stage's work: a labelled record's photo is fetched, decoded, fitted, padded and
written as ``<folder>/<id>.png`` under the images folder (rules §6), and the record is
committed done with the file's hashes, or failed with the reason.

    image URL -> GET (checked, capped) -> transform in the image pool -> file renamed into place
"""

from __future__ import annotations

from typing import cast

from ilid_async import reasons
from ilid_async.config import Config, ShopConfig
from ilid_async.crawl.http import HttpClient
from ilid_async.errors import ItemError, UserError
from ilid_async.images.fetch import download_image
from ilid_async.images.transform import Encoding, ImageError, ImageWriteError, write_failure
from ilid_async.output.dataset import image_path, safe_join
from ilid_async.run.database import disk_full_message
from ilid_async.run.store import ImageTask, Store
from ilid_async.workers import RestartingPool

__all__ = ["ImageStage"]


class ImageStage:
    """Images of leased records, fetched with ``http`` and transformed in ``pool``;
    ``replace`` writes them again even where a finished file is there."""

    def __init__(self, cfg: Config, shops: dict[str, ShopConfig], store: Store, http: HttpClient,
                 pool: RestartingPool, *, replace: bool = False):
        self.cfg = cfg
        self.shops = shops
        self.store = store
        self.http = http
        self.pool = pool
        self.replace = replace
        img = cfg.images
        self.encoding = Encoding(img.format, img.png_compress_level, img.quality)

    async def fetch_image(self, task: ImageTask) -> None:
        cfg = self.cfg
        img = cfg.images
        file = image_path(task.folder, task.id, self.encoding.ending)
        try:
            target = safe_join(cfg.images_dir, file)
            # rules §6: an existing file is kept (it was written whole: files are renamed into
            # place), once its hashes are known; a run killed between writing and committing
            # fetches it again.
            keep = target.exists() and task.hashed and not self.replace
        except ValueError:
            self.store.commit_image(task.id, fail=reasons.UNSAFE_PATH)
            return
        except OSError as e:  # a name too long, a folder we may not read
            self._write_failed(task, write_failure(e), cast(str, e.strerror))  # str in practice
            return
        if keep:
            self.store.commit_image(task.id, file=file)
            return
        try:
            result = await download_image(self.http, self.pool, task.image_url, target, width=img.width,
                                          height=img.height, max_pixels=img.max_pixels, encoding=self.encoding,
                                          max_bytes=cfg.http.max_image_bytes,
                                          check_robots=self.shops[task.shop].obey_robots)
        except ImageWriteError as e:
            self._write_failed(task, e.reason, e.detail)
            return
        except (ItemError, ImageError) as e:  # worker_died among them
            self.store.commit_image(task.id, fail=e.reason)
            return
        self.store.commit_image(task.id, file=file, sha256=result.sha256, phash=result.phash)

    def _write_failed(self, task: ImageTask, reason: str, detail: str) -> None:
        """A record whose image cannot be written fails with the reason; a full disk stops the
        run instead, leaving the record to do (the next run with room writes it)."""
        if reason == reasons.DISK_FULL:
            raise UserError(disk_full_message(self.cfg.images_dir, detail))
        self.store.commit_image(task.id, fail=reason)
