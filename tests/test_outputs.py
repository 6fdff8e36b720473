"""The dataset stage's outputs: duplicate groups, WebDataset shards, JSONL and Parquet."""

from __future__ import annotations

import json
import random
import tarfile

import pytest
from PIL import Image

from ilid_async.output.dataset import DATASET_KEYS, read_dataset
from ilid_async.output.writers import OutputPlan, find_duplicates, write_outputs, write_shards


def flip(bits: int, n: int, rng: random.Random) -> int:
    for position in rng.sample(range(64), n):
        bits ^= 1 << position
    return bits


def test_exact_and_near_duplicates_point_to_the_first_of_their_group():
    records = [
        {"id": "a", "sha256": "s1", "phash": "00000000000000ff"},
        {"id": "b", "sha256": "s1", "phash": "00000000000000ff"},  # same bytes as a
        {"id": "c", "sha256": "s2", "phash": "00000000000000fc"},  # 2 bits from a
        {"id": "d", "sha256": "s3", "phash": "ffffffff00000000"},  # far from all
        {"id": "e", "sha256": "s4", "phash": "000000000000000f"},  # 4 bits from a
        {"id": "f", "sha256": None, "phash": None},  # no image hashes (older store): unique
    ]
    dups = find_duplicates(records, near_bits=2)
    assert dups.first_of == {"b": "a", "c": "a"} and (dups.exact, dups.near) == (1, 1)
    dups = find_duplicates(records, near_bits=4)
    assert dups.first_of == {"b": "a", "c": "a", "e": "a"} and (dups.exact, dups.near) == (1, 2)
    exact_only = find_duplicates(records, near_bits=-1)
    assert exact_only.first_of == {"b": "a"} and exact_only.near == 0


@pytest.mark.parametrize("near_bits", [0, 3, 8])
def test_the_slice_index_finds_what_comparing_every_pair_finds(near_bits):
    rng = random.Random(near_bits)
    heads = [rng.getrandbits(64) for _ in range(150)]
    hashes = heads + [flip(rng.choice(heads), rng.randrange(near_bits + 3), rng) for _ in range(150)]
    rng.shuffle(hashes)
    records = [{"id": str(i), "sha256": str(i), "phash": f"{h:016x}"} for i, h in enumerate(hashes)]
    found = find_duplicates(records, near_bits)
    # By brute force: a record repeats the nearest earlier group head within near_bits.
    expected, group_heads = {}, []
    for record, bits in zip(records, hashes):
        near = [(bin(bits ^ hb).count("1"), hid) for hb, hid in group_heads
                if bin(bits ^ hb).count("1") <= near_bits]
        if near:
            best = min(d for d, _ in near)
            expected[record["id"]] = {hid for d, hid in near if d == best}
        else:
            group_heads.append((bits, record["id"]))
    assert set(found.first_of) == set(expected)
    assert all(found.first_of[i] in heads_ for i, heads_ in expected.items())
    assert found.near == len(expected) > 0


def entry(i: int, folder: str = "hinge") -> dict:
    return {"id": f"0000000{i}-aaaa-5bbb-8ccc-dddddddddddd", "url": f"http://127.0.0.1:9/img/{i}.jpg",
            "source": "testshop", "folder": folder, "image_file": f"{folder}/0000000{i}-aaaa-5bbb-8ccc-dddddddddddd.png",
            "sha256": f"sha{i % 4}", "phash": f"{i:016x}", "label_short": f"hinge {i}",
            "label_long": "zinc hinge", "description": None, "material": "zinc", "material_finish": None}


def make_images(images_dir, records) -> None:
    for r in records:
        path = images_dir / r["image_file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (int(r["id"][7]) * 20, 0, 0)).save(path)


def plan_for(tmp_path, formats, duplicates="keep", shard_size=3) -> OutputPlan:
    return OutputPlan(formats, tmp_path, tmp_path / "ilid.json", tmp_path / "images", shard_size, duplicates)


def test_webdataset_shards_read_back_with_tarfile(tmp_path):
    records = [entry(i) for i in range(7)]
    make_images(tmp_path / "images", records)
    dups = find_duplicates(records, near_bits=-1)  # sha0..sha3 repeat: 3 exact copies
    assert dups.exact == 3
    count = write_outputs(plan_for(tmp_path, ["ilid", "webdataset"], "group"), lambda: iter(records), dups)
    assert count == 7
    shards = sorted((tmp_path / "webdataset").glob("*.tar"))
    assert [s.name for s in shards] == ["ilid-000000.tar", "ilid-000001.tar", "ilid-000002.tar"]
    seen = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            keys = [n.rsplit(".", 1)[0] for n in names]
            assert keys[::2] == keys[1::2]  # image and JSON of a sample side by side
            for name in names:
                data = tar.extractfile(name).read()
                key, ending = name.rsplit(".", 1)
                if ending == "json":
                    meta = json.loads(data)
                    assert meta["id"] == key and tuple(meta)[:len(DATASET_KEYS)] == DATASET_KEYS
                    seen.append(meta)
                else:
                    assert ending == "png"
                    assert data == (tmp_path / "images" / f"hinge/{key}.png").read_bytes()
    assert [m["id"] for m in seen] == [r["id"] for r in records]
    assert [m["duplicate_of"] for m in seen] == [None] * 4 + [records[i]["id"] for i in range(3)]
    assert [e["id"] for e in read_dataset(tmp_path / "ilid.json")] == [r["id"] for r in records]
    first_bytes = [s.read_bytes() for s in shards]

    # Dropping duplicates: fewer samples, fewer shards; the stale third shard goes, the rest is
    # rewritten byte for byte the same way every time.
    count = write_outputs(plan_for(tmp_path, ["webdataset"], "drop"), lambda: iter(records), dups)
    assert count == 4
    shards = sorted((tmp_path / "webdataset").glob("*.tar"))
    assert len(shards) == 2 and not list((tmp_path / "webdataset").glob(".*"))
    write_outputs(plan_for(tmp_path, ["webdataset"], "keep"), lambda: iter(records), dups)
    assert [s.read_bytes() for s in sorted((tmp_path / "webdataset").glob("*.tar"))] != first_bytes  # no duplicate_of
    write_outputs(plan_for(tmp_path, ["webdataset"], "group"), lambda: iter(records), dups)
    assert [s.read_bytes() for s in sorted((tmp_path / "webdataset").glob("*.tar"))] == first_bytes


@pytest.mark.slow
def test_jsonl_and_parquet_hold_one_row_per_entry_with_hashes(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    records = [entry(i) for i in range(5)]
    dups = find_duplicates(records, near_bits=-1)
    write_outputs(plan_for(tmp_path, ["jsonl", "parquet"], "group"), lambda: iter(records), dups)
    assert not (tmp_path / "ilid.json").exists()  # not asked for
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    table = pq.read_table(tmp_path / "metadata.parquet").to_pylist()
    assert rows == table
    assert [r["image_sha256"] for r in rows] == [r["sha256"] for r in records]
    assert [r["duplicate_of"] for r in rows] == [None] * 4 + [records[0]["id"]]
    assert all(r["image"] == rec["image_file"] for r, rec in zip(rows, records))


def test_a_shard_never_takes_a_path_out_of_the_images_folder(tmp_path):
    bad = entry(1)
    bad["image_file"] = "../../etc/passwd"
    with pytest.raises(ValueError):
        write_outputs(plan_for(tmp_path, ["webdataset"]), lambda: iter([bad]), find_duplicates([], -1))
    assert not list((tmp_path / "webdataset").iterdir())  # no half-written shard left


def test_write_shards_counts(tmp_path):
    records = [entry(i) for i in range(4)]
    make_images(tmp_path / "images", records)
    rows = [({"id": r["id"], "image": r["image_file"]}, {}) for r in records]
    assert write_shards(tmp_path / "wds", tmp_path / "images", rows, 2) == 2
    assert write_shards(tmp_path / "wds", tmp_path / "images", [], 2) == 0
    assert not list((tmp_path / "wds").iterdir())
    with pytest.raises(FileNotFoundError):
        write_shards(tmp_path / "wds", tmp_path / "missing", rows, 2)
    assert not list((tmp_path / "wds").iterdir())


def test_parquet_is_written_a_row_group_at_a_time(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    import ilid_async.output.writers as outputs

    monkeypatch.setattr(outputs, "PARQUET_ROW_GROUP", 2)
    records = [entry(i) for i in range(5)]
    write_outputs(plan_for(tmp_path, ["jsonl", "parquet"]), lambda: iter(records), find_duplicates([], -1))
    parquet = pq.ParquetFile(tmp_path / "metadata.parquet")
    assert parquet.metadata.num_row_groups == 3  # 2 + 2 + 1: never the whole table at once
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert parquet.read().to_pylist() == rows
    assert parquet.schema_arrow.names == list(DATASET_KEYS) + list(outputs.METADATA_EXTRA)


def test_an_empty_dataset_still_gives_a_parquet_file_with_every_column(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from ilid_async.output.writers import METADATA_EXTRA

    write_outputs(plan_for(tmp_path, ["parquet"]), lambda: iter([]), find_duplicates([], -1))
    table = pq.read_table(tmp_path / "metadata.parquet")
    assert table.num_rows == 0 and table.column_names == list(DATASET_KEYS) + list(METADATA_EXTRA)
