"""The dataset file (rules §5): stable ids, entries in the ILID key order, duplicate image
URLs skipped, and one JSON array written atomically."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from ilid_async.atomic import write_atomic
from ilid_async.fields import DATASET_ORDER

__all__ = [
    "DATASET_KEYS", "ID_NAMESPACE", "stable_id", "image_path", "make_entry", "write_json_atomic", "read_dataset",
    "safe_join"
]

DATASET_KEYS: tuple[str, ...] = ("id", "image", "url", *DATASET_ORDER, "source")

# Fixed for this project: changing it would rename every image of an existing dataset.
ID_NAMESPACE: uuid.UUID = uuid.UUID("85218bf5-2446-41ff-8cfa-4615cd12dbb6")


def stable_id(source: str, image_url: str) -> str:
    """A name-based UUID of shop tag and image URL: the same record gets the same id (and image
    file name) on every run."""
    return str(uuid.uuid5(ID_NAMESPACE, source + "\n" + image_url))


def image_path(folder: str, record_id: str, ending: str = "png") -> str:
    """The dataset-relative image path, ``<folder>/<id>.png`` (or the ending of the format)."""
    return f"{folder}/{record_id}.{ending}"


def make_entry(
    *,
    record_id: str,
    folder: str,
    url: str,
    label_short: str,
    label_long: str,
    description: str,
    material: str,
    material_finish: str,
    source: str,
    image: str | None = None,
) -> dict[str, Any]:
    """One dataset entry with its keys in ``DATASET_KEYS`` order (consumers rely on it);
    ``image`` is the image file when it is not ``<folder>/<id>.png``."""
    return {
        "id": record_id,
        "image": image or image_path(folder, record_id),
        "url": url,
        "label_short": label_short,
        "label_long": label_long,
        "description": description,
        "material": material,
        "material_finish": material_finish,
        "source": source,
    }


def write_json_atomic(path: str | os.PathLike[str], entries: Iterable[dict[str, Any]]) -> int:
    """Write ``entries`` as one JSON array to ``path`` atomically and durably (atomic.py) and
    return how many.

    Entries are serialised one at a time, so a generator over a large store never has to be
    held in memory. Readers see either the old file or the complete new one, also after a crash
    or an exception raised by ``entries``.
    """
    def write(f) -> int:
        count = 0
        f.write(b"[")
        for entry in entries:
            if count:
                f.write(b",\n")
            f.write(orjson.dumps(entry))
            count += 1
        f.write(b"]\n")
        return count

    return write_atomic(path, write)


def read_dataset(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Load a dataset file; raise ``ValueError`` saying what is wrong if it is not a JSON
    array of objects."""
    data = pathlib.Path(path).read_bytes()
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(value, list):
        raise ValueError(f"{path}: expected a JSON array of entries, got {type(value).__name__}")
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ValueError(
                f"{path}: entry {index} should be a JSON object, got {type(entry).__name__}"
            )
    return value


def safe_join(root: str | os.PathLike[str], relative: str) -> pathlib.Path:
    """Resolve a dataset-relative path such as ``images/<id>.png`` under ``root``.

    The path comes from crawled or user-edited data, so anything that could name a file outside
    ``root`` is refused with ``ValueError``: absolute paths, drive letters, ``..``, NUL,
    backslashes, and symlinks leading out.
    """
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"image path must be a non-empty string, got {relative!r}")
    if "\x00" in relative or "\\" in relative:
        raise ValueError(f"image path {relative!r} contains a NUL or a backslash")
    if (
        pathlib.PurePosixPath(relative).is_absolute()
        or pathlib.PureWindowsPath(relative).drive
    ):
        raise ValueError(f"image path {relative!r} must be relative")
    if ".." in relative.split("/"):
        raise ValueError(f"image path {relative!r} must not contain '..'")
    # os.path, not pathlib: `download` checks every entry's path, and pathlib's objects and
    # resolve() made that a tenth of the parent process's CPU per image (issue 14).
    base = os.path.realpath(root)
    joined = os.path.realpath(os.path.join(base, relative))
    if not joined.startswith(base.rstrip(os.sep) + os.sep):
        raise ValueError(f"image path {relative!r} leads outside {base}")
    return pathlib.Path(joined)
