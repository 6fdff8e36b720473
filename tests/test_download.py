"""`ilid-async download`: the original downloader's command line against the loopback shop."""

from __future__ import annotations

import os

import orjson
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
