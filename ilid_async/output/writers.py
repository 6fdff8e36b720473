"""The dataset stage: duplicate groups, then the output files the config asks for.

    ilid        the dataset JSON (rules §5) beside images/, as ILID ships
    webdataset  webdataset/ilid-000000.tar, ...: <id>.<ending> + <id>.json per sample, in
                dataset order, a shard every output.shard_size samples (open_clip and the
                webdataset package read these)
    jsonl       metadata.jsonl: one row per image with its hashes and duplicate group
    parquet     metadata.parquet: the same rows as a table (needs pyarrow)

Every file is written under a temporary name and renamed, so readers see old or new, whole.
Each writer makes its own pass over the store's records: nothing holds the dataset in memory
but the duplicate map.
"""

from __future__ import annotations

import functools
import io
import itertools
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ilid_async.atomic import write_atomic
from ilid_async.output.dataset import DATASET_KEYS, make_entry, safe_join, write_json_atomic

__all__ = [
    "METADATA_EXTRA", "PARQUET_ROW_GROUP", "Duplicates", "find_duplicates", "OutputPlan", "write_outputs",
    "write_shards"
]

METADATA_EXTRA = ("image_sha256", "image_phash", "duplicate_of")
PARQUET_ROW_GROUP = 10_000  # rows a parquet row group holds, and all that is in memory at once


@dataclass
class Duplicates:
    """Which record repeats which: record id -> id of the first record of its group."""

    first_of: dict[str, str] = field(default_factory=dict)
    exact: int = 0  # same downloaded bytes as an earlier record
    near: int = 0  # perceptual hash within the threshold of an earlier record's


def find_duplicates(records: Iterable[dict], near_bits: int) -> Duplicates:
    """Duplicate groups over records in dataset order; the first of a group is its head.

    Near duplicates use multi-index hashing: two 64-bit hashes at most k bits apart agree
    exactly on at least one of k + 1 disjoint slices (pigeonhole), so only records sharing a
    slice are compared, not every pair.
    """
    found = Duplicates()
    by_bytes: dict[str, str] = {}
    slices = _slices(near_bits) if near_bits >= 0 else []
    index: list[dict[int, list[tuple[int, str]]]] = [{} for _ in slices]
    for record in records:
        record_id, sha, phash = record["id"], record.get("sha256"), record.get("phash")
        if sha and sha in by_bytes:
            found.first_of[record_id] = by_bytes[sha]
            found.exact += 1
            continue
        if sha:
            by_bytes[sha] = record_id
        if not phash or not slices:
            continue
        bits = int(phash, 16)
        head = _nearest_head(index, slices, bits, near_bits)
        if head is not None:
            found.first_of[record_id] = head
            found.near += 1
            continue
        for table, (shift, mask) in zip(index, slices):
            table.setdefault((bits >> shift) & mask, []).append((bits, record_id))
    return found


def _slices(near_bits: int) -> list[tuple[int, int]]:
    """(shift, mask) of near_bits + 1 disjoint slices covering 64 bits."""
    count = near_bits + 1
    bounds = [round(i * 64 / count) for i in range(count + 1)]
    return [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(bounds, bounds[1:])]


def _nearest_head(index, slices, bits: int, near_bits: int) -> str | None:
    best: tuple[int, str] | None = None
    for table, (shift, mask) in zip(index, slices):
        for other, head in table.get((bits >> shift) & mask, ()):
            distance = (bits ^ other).bit_count()
            if distance <= near_bits and (best is None or distance < best[0]):
                best = (distance, head)
    return best[1] if best else None


# --- writers ----------------------------------------------------------------------------------

@dataclass
class OutputPlan:
    formats: list[str]
    run_dir: Path
    dataset_path: Path
    images_dir: Path
    shard_size: int
    duplicates: str  # keep, drop or group


def write_outputs(plan: OutputPlan, records: Callable[[], Iterator[dict]], dups: Duplicates) -> int:
    """Write every output in ``plan.formats``; ``records()`` gives a fresh pass over the done
    records in dataset order. Returns the number of dataset entries."""
    def rows() -> Iterator[tuple[dict, dict]]:
        for record in records():
            head = dups.first_of.get(record["id"])
            if head is not None and plan.duplicates == "drop":
                continue
            entry = make_entry(record_id=record["id"], folder=record["folder"], url=record["url"],
                               label_short=record["label_short"], label_long=record["label_long"],
                               description=record["description"], material=record["material"],
                               material_finish=record["material_finish"], source=record["source"],
                               image=record["image_file"])
            extra = {"image_sha256": record.get("sha256"), "image_phash": record.get("phash"),
                     "duplicate_of": head if plan.duplicates == "group" else None}
            yield entry, extra

    if "ilid" in plan.formats:
        count = write_json_atomic(plan.dataset_path, (entry for entry, _ in rows()))
    else:
        count = sum(1 for _ in rows())
    if "jsonl" in plan.formats:
        write_atomic(plan.run_dir / "metadata.jsonl",
                      lambda f: f.writelines(orjson.dumps({**e, **x}) + b"\n" for e, x in rows()))
    if "parquet" in plan.formats:
        write_atomic(plan.run_dir / "metadata.parquet", lambda f: _write_parquet(f, rows()))
    if "webdataset" in plan.formats:
        write_shards(plan.run_dir / "webdataset", plan.images_dir, rows(), plan.shard_size)
    return count


def _write_parquet(f, rows: Iterable[tuple[dict, dict]]) -> None:
    """The rows as a table of strings, a row group at a time: only one group is in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(key, pa.string()) for key in DATASET_KEYS + METADATA_EXTRA])
    with pq.ParquetWriter(f, schema) as writer:
        group: list[dict] = []
        for entry, extra in rows:
            group.append({**entry, **extra})
            if len(group) == PARQUET_ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group.clear()
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))


def write_shards(folder: Path, images_dir: Path, rows: Iterable[tuple[dict, dict]], shard_size: int) -> int:
    """WebDataset tar shards; shards left over from a larger earlier dataset are removed.
    Returns the number of shards."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = iter(rows)
    shard = 0
    while (first := next(rows, None)) is not None:
        in_shard = itertools.chain([first], itertools.islice(rows, shard_size - 1))
        write = functools.partial(_write_shard, images_dir=images_dir, rows=in_shard)
        write_atomic(folder / f"ilid-{shard:06d}.tar", write)
        shard += 1
    for stale in folder.glob("ilid-*.tar"):
        if int(stale.stem.split("-")[1]) >= shard:
            stale.unlink()
    return shard


def _write_shard(f, *, images_dir: Path, rows: Iterable[tuple[dict, dict]]) -> None:
    with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry, extra in rows:
            image = safe_join(images_dir, entry["image"])
            key = entry["id"]  # a uuid: no dots, so loaders split key and ending correctly
            _add_member(tar, f"{key}.{image.suffix[1:]}", image.read_bytes())
            _add_member(tar, f"{key}.json", orjson.dumps({**entry, **extra}))


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed owner, mode and time: the same dataset gives byte-identical shards.
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))
