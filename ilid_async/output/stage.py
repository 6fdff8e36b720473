"""The dataset stage: the store's done records become the dataset file and the other output
files the config asks for (rules §5), each written whole; their counts go to the store."""

from __future__ import annotations

from typing import cast

from ilid_async.config import Config
from ilid_async.errors import NO_SPACE_ERRNOS, UserError
from ilid_async.output.writers import OutputPlan, find_duplicates, write_outputs
from ilid_async.run.database import disk_full_message
from ilid_async.run.store import Store

__all__ = ["write_dataset"]


def write_dataset(cfg: Config, store: Store) -> int:
    """Write the outputs; returns the dataset's entry count. A write that fails is a UserError:
    the store keeps everything, and the next run writes them again."""
    dups = find_duplicates(store.queries.done_records(), cfg.images.near_duplicate_bits)
    plan = OutputPlan(cast(list[str], cfg.output.formats), cfg.run_dir, cfg.dataset_path, cfg.images_dir,
                      cfg.output.shard_size, cfg.images.duplicates)
    try:
        count = write_outputs(plan, store.queries.done_records, dups)
    except OSError as e:
        if e.errno in NO_SPACE_ERRNOS:
            raise UserError(disk_full_message(cfg.run_dir, cast(str, e.strerror))) from None
        raise UserError(f"{e.filename or cfg.run_dir}: cannot write the dataset ({e.strerror})") from None
    for name, value in (("dataset_entries", count), ("exact_duplicates", dups.exact),
                        ("near_duplicates", dups.near)):
        store.set_counter(name, value)
    return count
