"""Tests for ilid_async.output.dataset: ids, entry layout, de-duplication, atomic writes, safe paths."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import orjson
import pytest

from ilid_async.output.dataset import (
    DATASET_KEYS,
    ID_NAMESPACE,
    image_path,
    make_entry,
    read_dataset,
    safe_join,
    stable_id,
    write_json_atomic,
)


def entry(url: str, source: str = "shop", **overrides) -> dict:
    fields = dict(
        record_id=stable_id(source, url),
        folder="images",
        url=url,
        label_short="hex bolt",
        label_long="a zinc plated hex bolt M8",
        description="Hex bolt M8 x 40, DIN 933 — zinc plated",
        material="steel",
        material_finish="zinc plated",
        source=source,
    )
    fields.update(overrides)
    return make_entry(**fields)


def entries(n: int) -> list[dict]:
    return [entry(f"https://shop.example/img/{i}.jpg") for i in range(n)]


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- ids and entries --------------------------------------------------------------------------

def test_stable_id_is_deterministic_uuid5():
    a = stable_id("shop", "https://shop.example/a.jpg")
    assert a == stable_id("shop", "https://shop.example/a.jpg")
    parsed = uuid.UUID(a)
    assert parsed.version == 5 and str(parsed) == a
    assert a == str(uuid.uuid5(ID_NAMESPACE, "shop\nhttps://shop.example/a.jpg"))


def test_stable_id_differs_by_source_and_url():
    ids = {
        stable_id("shop", "https://shop.example/a.jpg"),
        stable_id("other", "https://shop.example/a.jpg"),
        stable_id("shop", "https://shop.example/b.jpg"),
        # The separator keeps ("ab", "c") and ("a", "bc") apart.
        stable_id("ab", "c"),
        stable_id("a", "bc"),
    }
    assert len(ids) == 5


def test_namespace_is_a_fixed_constant():
    assert ID_NAMESPACE == uuid.UUID("85218bf5-2446-41ff-8cfa-4615cd12dbb6")


def test_image_path():
    assert image_path("images", "abc") == "images/abc.png"


def test_make_entry_key_order_and_values():
    e = entry("https://shop.example/a.jpg")
    assert tuple(e) == DATASET_KEYS
    assert e["image"] == f"images/{e['id']}.png"
    assert e["source"] == "shop"


def test_make_entry_is_keyword_only():
    with pytest.raises(TypeError):
        make_entry("id", "images", "u", "s", "l", "d", "m", "f", "src")  # type: ignore[misc]


# --- writing ----------------------------------------------------------------------------------

def test_write_json_atomic_round_trip(tmp_path):
    path = tmp_path / "ilid.json"
    data = entries(3)
    assert write_json_atomic(path, iter(data)) == 3
    raw = path.read_bytes()
    assert orjson.loads(raw) == data
    assert json.loads(raw.decode("utf-8")) == data
    for loaded in json.loads(raw):
        assert tuple(loaded) == DATASET_KEYS  # key order survives the file
    assert temp_files(tmp_path) == []


def test_write_json_atomic_empty_and_single(tmp_path):
    path = tmp_path / "d.json"
    assert write_json_atomic(path, []) == 0
    assert orjson.loads(path.read_bytes()) == []
    assert write_json_atomic(path, entries(1)) == 1
    assert len(json.loads(path.read_text())) == 1


def test_write_json_atomic_replaces_existing_and_keeps_its_mode(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("old")
    path.chmod(0o640)
    write_json_atomic(str(path), entries(2))
    assert len(read_dataset(path)) == 2
    assert path.stat().st_mode & 0o777 == 0o640
    assert temp_files(tmp_path) == []


def test_write_json_atomic_new_file_is_readable(tmp_path):
    path = tmp_path / "sub" / "d.json"  # parent folder is created
    write_json_atomic(path, entries(1))
    assert path.stat().st_mode & 0o777 == 0o644


def test_interrupted_write_leaves_old_file_intact(tmp_path):
    path = tmp_path / "d.json"
    write_json_atomic(path, entries(2))
    before = path.read_bytes()

    def failing():
        yield from entries(5)
        raise RuntimeError("store went away")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, failing())
    assert path.read_bytes() == before
    assert temp_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["d.json"]


def test_unserialisable_entry_leaves_no_file(tmp_path):
    path = tmp_path / "d.json"
    with pytest.raises(TypeError):
        write_json_atomic(path, [{"id": object()}])
    assert list(tmp_path.iterdir()) == []


def test_unicode_is_written_as_utf8(tmp_path):
    path = tmp_path / "d.json"
    write_json_atomic(path, [entry("https://x/ü.jpg", description="Schraube Ø 8 mm")])
    assert read_dataset(path)[0]["description"] == "Schraube Ø 8 mm"


# --- reading ----------------------------------------------------------------------------------

def test_read_dataset_round_trip(tmp_path):
    path = tmp_path / "d.json"
    write_json_atomic(path, entries(3))
    assert read_dataset(path) == entries(3)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"id": 1}', "array"),
        (b'"text"', "array"),
        (b"[1, 2]", "entry 0"),
        (b'[{"id": 1}, []]', "entry 1"),
        (b"[{", "JSON"),
        (b"", "JSON"),
    ],
)
def test_read_dataset_rejects_non_array_of_objects(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        read_dataset(path)
    assert "bad.json" in str(info.value)


# --- safe_join --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "relative",
    [
        "../x.png",
        "/etc/passwd",
        "a/../../x",
        "a/../x.png",
        "a\\b",
        "..\\x.png",
        "images/x\x00.png",
        "C:/x.png",
        "",
        ".",
        "..",
    ],
)
def test_safe_join_refuses_escapes(tmp_path, relative):
    with pytest.raises(ValueError):
        safe_join(tmp_path, relative)


def test_safe_join_accepts_dataset_paths(tmp_path):
    assert safe_join(tmp_path, "folder/id.png") == tmp_path.resolve() / "folder" / "id.png"
    assert safe_join(str(tmp_path), "id.png") == tmp_path.resolve() / "id.png"


def test_safe_join_refuses_symlink_out_of_root(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "images").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError):
        safe_join(root, "images/x.png")

