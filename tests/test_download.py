"""`ilid-async download`: the original downloader's command line against the loopback shop."""

from __future__ import annotations

import os

import orjson
import pytest
from PIL import Image

from conftest import run_cli
from ilid_async.dataset import DATASET_KEYS


def entry(i: int, url: str, image: str) -> dict:
    values = [f"id-{i}", image, url, "hinge", "zinc hinge", "A hinge.", "zinc", "black", "testshop"]
    return dict(zip(DATASET_KEYS, values))


def test_download_command(shop_server, tmp_path):
    base = shop_server.base_url
    entries = [
        entry(0, f"{base}/img/hinge-1.jpg", "hinge/id-0.png"),
        entry(1, f"{base}/img/handle-5.jpg", "handle/id-1.png"),
        entry(2, f"{base}/img/missing.jpg", "hinge/id-2.png"),  # 404
        entry(3, f"{base}/p/hinge-1", "hinge/id-3.png"),  # HTML, not an image
        entry(4, f"{base}/img/hinge-1.jpg", "../escape.png"),  # crawled text must not escape
    ]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    out = tmp_path / "downloaded.json"
    args = ["download", "--dataset", str(dataset), "--folder", str(tmp_path / "images"),
            "--image_width", "256", "--image_height", "128", "--dataset-downloaded", str(out),
            "--allow-loopback"]
    result = run_cli(*args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "downloaded 2" in result.stdout and "http_404 1" in result.stdout
    assert "not_image_content_type 1" in result.stdout and "unsafe_path 1" in result.stdout
    kept = orjson.loads(out.read_bytes())
    assert [e["id"] for e in kept] == ["id-0", "id-1"] and tuple(kept[0]) == DATASET_KEYS
    assert orjson.loads(dataset.read_bytes()) == entries  # the input is left alone
    assert not (tmp_path / "escape.png").exists()
    for name in ("hinge/id-0.png", "handle/id-1.png"):
        with Image.open(tmp_path / "images" / name) as img:
            assert img.size == (256, 128) and img.format == "PNG"

    # Existing files are kept unless --replace.
    target = tmp_path / "images" / "hinge" / "id-0.png"
    os.utime(target, (1, 1))
    shop_server.shop.requests.clear()
    again = run_cli(*args, timeout=120)
    assert again.returncode == 0 and "kept existing 2" in again.stdout
    assert target.stat().st_mtime == 1  # not rewritten
    assert "/img/hinge-1.jpg" not in shop_server.shop.requests
    replaced = run_cli(*args, "--replace", timeout=120)
    assert replaced.returncode == 0 and "downloaded 2" in replaced.stdout
    assert target.stat().st_mtime != 1


def test_download_without_dataset_is_a_user_error(tmp_path):
    result = run_cli("download", "--dataset", str(tmp_path / "none.json"), "--folder", str(tmp_path),
                     timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'none.json'}: dataset file not found"


def test_download_rewrites_the_input_when_no_second_file(shop_server, tmp_path):
    base = shop_server.base_url
    entries = [entry(0, f"{base}/img/clamp-3.jpg", "clamp/id-0.png"),
               entry(1, f"{base}/img/nope.jpg", "clamp/id-1.png")]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    result = run_cli("download", "--dataset", str(dataset), "--folder", str(tmp_path / "images"),
                     "--allow-loopback", timeout=120)
    assert result.returncode == 0, result.stderr
    assert [e["id"] for e in orjson.loads(dataset.read_bytes())] == ["id-0"]
    with Image.open(tmp_path / "images" / "clamp" / "id-0.png") as img:
        assert img.size == (512, 512)


@pytest.mark.parametrize("flag, value, expected", [
    ("--concurrency", "0", "argument --concurrency: must be at least 1"),
    ("--per-host-concurrency", "0", "argument --per-host-concurrency: must be at least 1"),
    ("--per-host-rate", "nan", "argument --per-host-rate: must be a finite number, not nan"),
    ("--per-host-rate", "inf", "argument --per-host-rate: must be a finite number, not inf"),
    ("--per-host-rate", "-1", "argument --per-host-rate: must be at least 0"),
    ("--image_width", "0", "argument --image_width: must be at least 1"),
    ("--image_height", "-5", "argument --image_height: must be at least 1"),
])
def test_download_flags_keep_the_settings_bounds(tmp_path, flag, value, expected):
    """A flag that stands for a setting is refused as the setting would be, before any request:
    these values used to hang the download or fail deep inside it."""
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps([entry(0, "http://127.0.0.1:9/img/a.jpg", "a/id-0.png")]))
    # The timeout only stops a regression that hangs; a refused flag exits at once.
    result = run_cli("download", "--dataset", str(dataset), "--folder", str(tmp_path / "images"),
                     "--allow-loopback", flag, value, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"ilid-async download: error: {expected}"
    assert not (tmp_path / "images").exists()


def test_an_image_name_too_long_fails_only_its_entry(shop_server, tmp_path):
    base = shop_server.base_url
    entries = [
        entry(0, f"{base}/img/hinge-1.jpg", "hinge/id-0.png"),
        entry(1, f"{base}/img/hinge-1.jpg", "hinge/" + "x" * 300 + ".png"),  # over 255 bytes
        entry(2, f"{base}/img/handle-5.jpg", "hinge/" + "y" * 246 + ".png"),  # 250: no room for the temp file
        entry(3, f"{base}/img/clamp-3.jpg", "z" * 256 + "/id-3.png"),  # the folder is too long
        entry(4, f"{base}/img/clamp-3.jpg", "hinge/" + "é" * 126 + ".png"),  # 256 bytes in UTF-8
    ]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    out = tmp_path / "downloaded.json"
    result = run_cli("download", "--dataset", str(dataset), "--folder", str(tmp_path / "images"),
                     "--dataset-downloaded", str(out), "--allow-loopback", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "downloaded 1," in result.stdout and "failed: name_too_long 4" in result.stdout
    assert [e["id"] for e in orjson.loads(out.read_bytes())] == ["id-0"]
    # No temp file is left behind.
    assert sorted(p.name for p in (tmp_path / "images" / "hinge").iterdir()) == ["id-0.png"]


async def test_a_file_system_refusing_a_name_fails_only_its_entry(shop_server, tmp_path, monkeypatch):
    """A file system whose limit is under the check's: the name passes the check, the file
    system refuses it (ENAMETOOLONG), and only that entry is failed."""
    from ilid_async import download
    from ilid_async.config import HttpSettings

    monkeypatch.setattr(download, "MAX_NAME_BYTES", 4096)  # as if the file system allowed more
    base = shop_server.base_url
    entries = [entry(0, f"{base}/img/hinge-1.jpg", "hinge/id-0.png"),
               entry(1, f"{base}/img/handle-5.jpg", "hinge/" + "y" * 300 + ".png")]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    # The folder exists: in a missing one the lookup fails on the folder before the name.
    (tmp_path / "images" / "hinge").mkdir(parents=True)
    report = await download.download_dataset(
        dataset, tmp_path / "images", width=64, height=64, workers=1,
        http_settings=HttpSettings(allow_loopback=True, per_host_rate=0))
    assert (report.downloaded, report.failed) == (1, {"name_too_long": 1})
    assert [e["id"] for e in orjson.loads(dataset.read_bytes())] == ["id-0"]


def test_a_full_disk_stops_the_download_with_one_line(shop_server, tmp_path):
    import resource
    import subprocess
    import sys

    from conftest import REPO

    base = shop_server.base_url
    entries = [entry(i, f"{base}/img/{name}.jpg", f"part/id-{i}.png")
               for i, name in enumerate(["hinge-1", "handle-5", "clamp-3"])]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    folder = tmp_path / "images"
    args = [sys.executable, "-m", "ilid_async", "download", "--dataset", str(dataset), "--folder", str(folder),
            "--concurrency", "1", "--allow-loopback"]
    # No file may grow past 1 kB (EFBIG, as on a full disk): none of these PNGs (2-3 kB) fits.
    limit = 1_000
    full = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder}: disk full ("), full.stderr
    assert orjson.loads(dataset.read_bytes()) == entries  # the dataset file is left as it was
    assert not list(folder.rglob("*.tmp"))  # no half-written image is left behind
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "downloaded 3" in again.stdout
    assert [e["id"] for e in orjson.loads(dataset.read_bytes())] == ["id-0", "id-1", "id-2"]
