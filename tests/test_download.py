"""`ilid-async download`: the original downloader's command line against the loopback shop."""

from __future__ import annotations

import os
import re

import orjson
import pytest
from helpers import run_cli
from PIL import Image

from ilid_async.output.dataset import DATASET_KEYS
from ilid_async.run.download import image_file
from ilid_async.images.transform import Encoding


def entry(i: int, url: str, image: str) -> dict:
    values = [f"id-{i}", image, url, "hinge", "zinc hinge", "A hinge.", "zinc", "black", "testshop"]
    return dict(zip(DATASET_KEYS, values))


@pytest.mark.slow
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


@pytest.mark.slow
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
    ("--format", "gif", "argument --format: one of png, jpeg, webp"),
    ("--format", "PNG", "argument --format: one of png, jpeg, webp"),
    ("--png-compress-level", "10", "argument --png-compress-level: must be in 0..9"),
    ("--png-compress-level", "-1", "argument --png-compress-level: must be in 0..9"),
    ("--png-compress-level", "fast", "argument --png-compress-level: invalid int value: 'fast'"),
    ("--quality", "0", "argument --quality: must be in 1..100"),
    ("--quality", "101", "argument --quality: must be in 1..100"),
    ("--quality", "9.5", "argument --quality: invalid int value: '9.5'"),
    ("--workers", "-1", "argument --workers: must be at least 0"),
    ("--workers", "two", "argument --workers: invalid int value: 'two'"),
    ("--progress-interval", "-1", "argument --progress-interval: must be a finite number, 0 or more"),
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


@pytest.mark.slow
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
    from ilid_async.run import download
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


@pytest.mark.slow
def test_a_full_disk_stops_the_download_with_one_line(shop_server, tmp_path):
    import resource
    import subprocess
    import sys

    from helpers import REPO

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


def download(dataset, folder, *flags: str):
    return run_cli("download", "--dataset", str(dataset), "--folder", str(folder), "--allow-loopback",
                   "--per-host-rate", "0", *flags, timeout=120)


def test_image_file_names_carry_the_format_ending():
    assert image_file("hinge/id-0.png", None) == "hinge/id-0.png"  # rules §6: as it is
    assert image_file("hinge/id-0.jpg", Encoding("png")) == "hinge/id-0.jpg"
    assert image_file("hinge/id-0.png", Encoding("jpeg")) == "hinge/id-0.jpg"
    assert image_file("hinge/id-0.PNG", Encoding("webp")) == "hinge/id-0.webp"
    assert image_file("hinge/id-0.jpeg", Encoding("jpeg")) == "hinge/id-0.jpg"
    assert image_file("hinge/id-0", Encoding("jpeg")) == "hinge/id-0.jpg"
    assert image_file("hinge/v1.2", Encoding("webp")) == "hinge/v1.2.webp"  # not an image ending
    assert image_file("hinge/.png", Encoding("jpeg")) == "hinge/.png.jpg"  # a hidden name, no ending
    assert image_file("", Encoding("jpeg")) == ""  # refused as unsafe, as before


@pytest.mark.slow
@pytest.mark.parametrize("fmt, pillow, ending", [("jpeg", "JPEG", "jpg"), ("webp", "WEBP", "webp")])
def test_download_format_writes_files_with_its_ending(shop_server, tmp_path, fmt, pillow, ending):
    base = shop_server.base_url
    entries = [entry(0, f"{base}/img/hinge-1.jpg", "hinge/id-0.png"),
               entry(1, f"{base}/img/handle-5.jpg", "handle/id-1"),  # no ending: the format's is added
               entry(2, f"{base}/img/missing.jpg", "hinge/id-2.png")]  # 404
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    out = tmp_path / "downloaded.json"
    images = tmp_path / "images"
    args = ("--format", fmt, "--image_width", "64", "--image_height", "32", "--dataset-downloaded", str(out))
    result = download(dataset, images, *args)
    assert result.returncode == 0, result.stderr
    assert "downloaded 2" in result.stdout and "http_404 1" in result.stdout
    written = sorted(str(p.relative_to(images)) for p in images.rglob("*") if p.is_file())
    assert written == [f"handle/id-1.{ending}", f"hinge/id-0.{ending}"]
    for name in written:
        with Image.open(images / name) as img:
            assert img.format == pillow and img.size == (64, 32)
    kept = orjson.loads(out.read_bytes())
    assert [(e["id"], e["image"]) for e in kept] == [("id-0", f"hinge/id-0.{ending}"),
                                                     ("id-1", f"handle/id-1.{ending}")]
    assert [{k: v for k, v in e.items() if k != "image"} for e in kept] == \
        [{k: v for k, v in e.items() if k != "image"} for e in entries[:2]]
    assert tuple(kept[0]) == DATASET_KEYS
    assert orjson.loads(dataset.read_bytes()) == entries  # the input is left alone
    # The next run finds the files it wrote, under their ending, and keeps them.
    again = download(dataset, images, *args)
    assert again.returncode == 0 and "kept existing 2" in again.stdout, again.stdout
    # Its own output as input: the names already carry the ending and stay as they are.
    third = download(out, images, "--format", fmt)
    assert third.returncode == 0 and "kept existing 2" in third.stdout
    assert orjson.loads(out.read_bytes()) == kept


@pytest.mark.slow
def test_download_png_compress_level(shop_server, tmp_path):
    base = shop_server.base_url
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps([entry(0, f"{base}/img/clamp-3.jpg", "clamp/id-0.png")]))
    files = {}
    for level in ("1", "9"):
        result = download(dataset, tmp_path / level, "--png-compress-level", level,
                          "--dataset-downloaded", str(tmp_path / f"{level}.json"))
        assert result.returncode == 0 and "downloaded 1" in result.stdout, result.stderr
        files[level] = tmp_path / level / "clamp" / "id-0.png"
        with Image.open(files[level]) as img:
            assert img.format == "PNG" and img.size == (512, 512)
    assert files["1"].read_bytes() != files["9"].read_bytes()
    assert files["9"].stat().st_size <= files["1"].stat().st_size
    with Image.open(files["1"]) as fast, Image.open(files["9"]) as small:
        assert fast.tobytes() == small.tobytes()  # lossless either way


@pytest.mark.slow
def test_download_quality_and_workers(shop_server, tmp_path):
    base = shop_server.base_url
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps([entry(0, f"{base}/img/hinge-1.jpg", "hinge/id-0.png"),
                                      entry(1, f"{base}/img/handle-5.jpg", "handle/id-1.png")]))
    sizes = {}
    for quality in ("5", "95"):
        folder = tmp_path / quality
        result = download(dataset, folder, "--format", "jpeg", "--quality", quality, "--workers", "1",
                          "--dataset-downloaded", str(tmp_path / f"{quality}.json"))
        assert result.returncode == 0 and "downloaded 2" in result.stdout, result.stderr
        sizes[quality] = sum(p.stat().st_size for p in folder.rglob("*.jpg"))
    assert sizes["5"] < sizes["95"]


@pytest.mark.slow
def test_download_progress_line(shop_server, tmp_path):
    base = shop_server.base_url
    entries = [entry(0, f"{base}/img/hinge-1.jpg", "hinge/id-0.png"),
               entry(1, f"{base}/img/clamp-3.jpg", "clamp/id-1.png"),
               entry(2, f"{base}/img/missing.jpg", "hinge/id-2.png")]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    args = ("--dataset-downloaded", str(tmp_path / "out.json"))
    result = download(dataset, tmp_path / "images", *args, "--progress-interval", "0.05")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(re.fullmatch(r"progress \[ *\d+s\] download: \d+/3 done, .*", line)
                         for line in lines), result.stderr
    final = r"progress \[ *\d+s\] download: 3/3 done, (-|[\d.]+/s), done, failed 1"
    assert re.fullmatch(final, lines[-1]), result.stderr
    # The default interval still ends with the final counts; 0 = no progress at all.
    default = download(dataset, tmp_path / "images", *args)
    assert default.returncode == 0
    assert re.fullmatch(final, default.stderr.strip().splitlines()[-1]), default.stderr
    silent = download(dataset, tmp_path / "images", *args, "--progress-interval", "0")
    assert silent.returncode == 0 and silent.stderr == ""


def test_download_progress_on_a_terminal_is_one_live_line():
    import io

    from ilid_async.run.download import DownloadProgress, DownloadReport

    report, stream, now = DownloadReport(total=4), io.StringIO(), [0.0]
    progress = DownloadProgress(report, 10.0, stream, live=True, clock=lambda: now[0])
    report.downloaded, now[0] = 1, 1.0
    progress._print(progress.line())
    report.downloaded, now[0] = 3, 2.0
    progress._print(progress.line())
    progress.close()  # stopped early (a full disk): the error line starts on a new line
    assert stream.getvalue() == ("\r\x1b[Kprogress [     1s] download: 1/4 done, 1.0/s, ETA 0:03, failed 0"
                                 "\r\x1b[Kprogress [     2s] download: 3/4 done, 1.5/s, ETA 0:01, failed 0\n")
    report.fail("http_404")
    progress.finish()
    assert stream.getvalue().endswith(
        "\r\x1b[Kprogress [     2s] download: 4/4 done, 2.0/s, done, failed 1\n")
    progress.close()  # nothing left open
    assert stream.getvalue().endswith("failed 1\n")


async def test_an_empty_file_left_by_a_power_cut_is_written_again(shop_server, tmp_path):
    """Images are not fsynced one by one (one sync at the end): a power cut before it can leave
    empty files, which the next download writes again, where whole ones are kept."""
    from ilid_async.run import download
    from ilid_async.config import HttpSettings

    base = shop_server.base_url
    entries = [entry(0, f"{base}/img/hinge-1.jpg", "hinge/id-0.png"),
               entry(1, f"{base}/img/handle-5.jpg", "hinge/id-1.png")]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    folder = tmp_path / "images" / "hinge"
    folder.mkdir(parents=True)
    (folder / "id-0.png").write_bytes(b"")  # the data never reached the disk
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "id-1.png")  # whole: kept
    report = await download.download_dataset(
        dataset, tmp_path / "images", width=64, height=64, workers=1,
        http_settings=HttpSettings(allow_loopback=True, per_host_rate=0))
    assert (report.downloaded, report.skipped_existing) == (1, 1)
    with Image.open(folder / "id-0.png") as img:
        assert img.size == (64, 64) and img.getpixel((0, 0)) != (1, 2, 3)
    with Image.open(folder / "id-1.png") as img:
        assert img.getpixel((0, 0)) == (1, 2, 3)


async def test_images_are_synced_once_before_the_dataset_file_names_them(shop_server, tmp_path, monkeypatch):
    from ilid_async.run import download
    from ilid_async.config import HttpSettings

    base = shop_server.base_url
    entries = [entry(i, f"{base}/img/hinge-1.jpg", f"hinge/id-{i}.png") for i in range(3)]
    dataset = tmp_path / "ilid.json"
    dataset.write_bytes(orjson.dumps(entries))
    out = tmp_path / "downloaded.json"
    syncs = []
    real_sync = os.sync
    monkeypatch.setattr(download.os, "sync", lambda: (syncs.append(
        (sorted(p.name for p in (tmp_path / "images" / "hinge").iterdir()), out.exists())), real_sync()))
    report = await download.download_dataset(
        dataset, tmp_path / "images", width=64, height=64, workers=1, dataset_downloaded=out,
        http_settings=HttpSettings(allow_loopback=True, per_host_rate=0))
    assert report.downloaded == 3
    assert syncs == [(["id-0.png", "id-1.png", "id-2.png"], False)]  # once, all images, no dataset yet
    assert out.exists()
