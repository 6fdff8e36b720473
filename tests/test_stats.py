"""`ilid-async stats`: the numbers, the word-frequency charts and the HTML report."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import REPO, run_cli, write_config
from PIL import Image

from ilid_async.cli import main
from ilid_async.output.dataset import make_entry, write_json_atomic
from ilid_async.output.report_html import chart_name, sample_entries
from ilid_async.output.stats import TOP_WORDS, WORD_FIELDS, compute_stats, word_frequencies, words

EVIL = "<script>alert('x')</script>"

# (label_short, label_long, material, material_finish, source, copies): the dataset is these
# rows repeated `copies` times, so every expected count below follows from this table.
ROWS = [
    ("toggle clamp", "horizontal toggle clamp", "steel", "zinc-plated", "shop-a", 3),
    ("ball bearing", "deep groove ball bearing", "chrome steel.", "bright", "shop-a", 2),
    ("hinge", "hinge for aluminium profiles", "Steel,", None, "shop-b", 4),
    (EVIL + " knob", "star knob", None, None, "shop-b", 1),
]


def make_entries() -> list[dict]:
    entries = []
    for row_no, (short, long_, material, finish, source, copies) in enumerate(ROWS):
        folder = re.sub(r"\W+", "_", short).strip("_")
        for copy in range(copies):
            entries.append(make_entry(
                record_id=f"id-{row_no}-{copy}", folder=folder, url=f"http://shop/{row_no}/{copy}.jpg",
                label_short=short, label_long=long_, description=f"description {copy}",
                material=material, material_finish=finish, source=source))
    return entries


def write_dataset(folder: Path, entries: list[dict], with_images: bool = True) -> Path:
    """The dataset file and, beside it, images/ with a small PNG for each entry."""
    dataset = folder / "ilid.json"
    write_json_atomic(dataset, entries)
    if with_images:
        for i, entry in enumerate(entries):
            path = folder / "images" / entry["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (i * 20 % 256, 80, 120)).save(path)
    return dataset


def test_words_follow_spec_tokenisation():
    # rules §7: lower-cased, "." and "," removed, split on white space; nothing else is removed.
    assert words("Steel, Zinc-plated. 4.5 mm\tM8") == ["steel", "zinc-plated", "45", "mm", "m8"]


def test_numbers_match_the_data():
    entries = make_entries()
    stats = compute_stats(entries)

    assert stats.records == sum(copies for *_, copies in ROWS)
    assert stats.unique["label_short"] == len(ROWS)
    # Each copy has its own description.
    assert stats.unique["description"] == max(copies for *_, copies in ROWS)
    assert stats.unique["material"] == len({r[2] for r in ROWS if r[2] is not None})
    assert stats.missing["material"] == sum(r[5] for r in ROWS if r[2] is None)
    assert stats.unique["material_finish"] == len({r[3] for r in ROWS if r[3] is not None})
    assert stats.missing["material_finish"] == sum(r[5] for r in ROWS if r[3] is None)
    assert stats.folders == len(ROWS)

    per_source: Counter[str] = Counter()
    for *_, source, copies in ROWS:
        per_source[source] += copies
    assert dict(stats.per_source) == dict(per_source)
    assert [n for _, n in stats.per_source] == sorted(per_source.values(), reverse=True)

    # "steel", "Steel," and "chrome steel." all count as the word "steel".
    steel = sum(copies for _, _, material, _, _, copies in ROWS if material and "steel" in material.lower())
    assert dict(stats.top_words["material"])["steel"] == steel
    knob = sum(copies for short, *_, copies in ROWS if "knob" in short)
    assert dict(stats.top_words["label_short"])["knob"] == knob
    long_counts: Counter[str] = Counter()
    for _, long_, *_, copies in ROWS:
        for word in long_.split():
            long_counts[word] += copies
    assert dict(stats.top_words["label_long"]) == dict(long_counts)


def test_top_words_keep_the_most_frequent_in_order():
    # Word i occurs i + 1 times, so the top 40 are the last 40, most frequent first.
    values = [" ".join(f"w{i}" for i in range(n, TOP_WORDS + 10)) for n in range(TOP_WORDS + 10)]
    top = word_frequencies(values)
    assert len(top) == TOP_WORDS
    assert top[0] == (f"w{TOP_WORDS + 9}", TOP_WORDS + 10)
    assert [n for _, n in top] == sorted((n for _, n in top), reverse=True)
    assert ("w0", 1) not in top


@pytest.mark.slow
def test_cli_writes_charts_and_escaped_report(tmp_path):
    entries = make_entries()
    # A hand-edited entry whose image path points outside the images folder.
    entries.append({**entries[0], "id": "escape", "image": "../../outside.png"})
    (tmp_path / "outside.png").write_bytes(b"not shown")
    dataset = write_dataset(tmp_path / "data", entries)

    result = run_cli("stats", str(dataset), "--sample", "100")
    assert result.returncode == 0, result.stderr
    assert f"records: {len(entries)}" in result.stdout
    for source, count in compute_stats(entries).per_source:
        assert re.search(rf"^\s+{source}\s+{count}$", result.stdout, re.M)

    report = tmp_path / "data" / "report"
    page = (report / "index.html").read_text()
    for field in WORD_FIELDS:
        with Image.open(report / chart_name(field)) as chart:
            assert chart.format == "PNG"
            assert chart.size[0] > 0 and chart.size[1] > 0
        assert f'src="{chart_name(field)}"' in page

    # The crawled label is shown as text, never as markup.
    assert "<script" not in page
    assert html.escape(EVIL) in page
    # Every sample image is a relative link to an image of the dataset, inside images/.
    images_dir = (tmp_path / "data" / "images").resolve()
    srcs = re.findall(r'<img src="(\.\./[^"]+)"', page)
    assert len(srcs) == len(entries) - 1
    for src in srcs:
        target = (report / html.unescape(src)).resolve()
        assert target.is_file() and target.is_relative_to(images_dir)
    assert "outside.png" not in page


@pytest.mark.slow
def test_stats_of_a_config_writes_into_the_run_folder(tmp_path):
    config = write_config(tmp_path, 'source = "x"\nsitemap_urls = ["http://127.0.0.1/s.xml"]\n')
    entries = make_entries()
    write_dataset(tmp_path / "run", entries, with_images=False)

    assert main(["stats", str(config)]) == 0
    assert (tmp_path / "run" / "report" / "index.html").is_file()
    # No image on disk: the grid is empty rather than full of broken links.
    assert "<figure>" not in (tmp_path / "run" / "report" / "index.html").read_text()


def test_sample_is_spread_and_stable(tmp_path):
    entries = make_entries()
    write_dataset(tmp_path, entries)
    first = sample_entries(entries, tmp_path / "images", 3)
    assert len(first) == 3
    assert [e["id"] for e, _ in first] == [e["id"] for e, _ in sample_entries(entries, tmp_path / "images", 3)]
    assert len({e["label_short"] for e, _ in first}) > 1  # not just the first rows


def test_empty_dataset_still_gets_a_report(tmp_path):
    dataset = write_dataset(tmp_path, [])
    assert main(["stats", str(dataset)]) == 0
    for field in WORD_FIELDS:
        with Image.open(tmp_path / "report" / chart_name(field)) as chart:
            assert chart.format == "PNG"


@pytest.mark.parametrize("content", [None, b"{not json", b'{"id": 1}', b"[1, 2]"])
def test_missing_or_invalid_dataset_is_a_user_error(tmp_path, capsys, content):
    dataset = tmp_path / "ilid.json"
    if content is not None:
        dataset.write_bytes(content)
    assert main(["stats", str(dataset)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(dataset) in err
    assert not (tmp_path / "report").exists()


def test_missing_dataset_exit_code_from_the_command(tmp_path):
    missing = tmp_path / "nothing.json"
    result = run_cli("stats", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr and "Traceback" not in result.stderr


def test_run_commands_do_not_import_matplotlib():
    code = ("import sys, ilid_async.cli, ilid_async.run.pipeline, ilid_async.output.stats; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_odd_values_in_a_hand_edited_file_are_counted(tmp_path):
    entries = make_entries()[:2]
    entries[0] = {**entries[0], "label_short": ["a", "list"], "material": {"x": 1}, "source": None}
    stats = compute_stats(entries)
    assert stats.unique["label_short"] == 2
    assert stats.records == 2
    dataset = write_dataset(tmp_path, entries)
    assert main(["stats", str(dataset)]) == 0
