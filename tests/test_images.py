"""Tests for ilid_async.images.transform: every input image is generated here with Pillow."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import random
import re
import struct
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from ilid_async.images import transform as images
from ilid_async.errors import ItemError
from ilid_async.images.transform import (
    Encoding,
    ImageError,
    ImageResult,
    fit_size,
    hamming,
    pad_edge,
    perceptual_hash,
    to_rgb,
    transform_image,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    """Incompressible pixels, so encoded files are big enough to truncate meaningfully."""
    return Image.frombytes("RGB", (w, h), random.Random(seed).randbytes(w * h * 3))


def run(tmp_path: Path, data: bytes, w: int = 64, h: int = 64, **kw) -> Image.Image:
    out = tmp_path / "out" / "img.png"
    result = transform_image(data, str(out), w, h, **kw)
    assert result.width == w and result.height == h
    assert result.bytes_written == out.stat().st_size
    img = Image.open(out)
    img.load()
    return img


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 8) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp")) if folder.exists() else []


# --- fit_size ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "src, target, expected",
    [
        ((300, 600), (512, 512), (256, 512)),  # portrait: height becomes H
        ((600, 300), (512, 512), (512, 256)),  # landscape: width becomes W
        ((1000, 1000), (512, 512), (512, 512)),  # square
        ((10, 20), (512, 512), (256, 512)),  # tiny: scaled up
        ((40000, 30000), (512, 512), (512, 384)),  # huge
        ((40000, 10), (512, 512), (512, 1)),  # a side never drops to 0
        ((1, 1), (512, 512), (512, 512)),
        ((1000, 1000), (800, 400), (400, 400)),  # non-square target: height limits
        ((1600, 400), (800, 400), (800, 200)),  # non-square target: width limits
        ((1000, 999), (512, 512), (512, 511)),  # rounding (511.488)
        ((3, 2), (512, 512), (512, 341)),  # 341.33 rounds down
        ((2, 3), (512, 512), (341, 512)),
    ],
)
def test_fit_size(src, target, expected):
    assert fit_size(*src, *target) == expected


def test_fit_size_never_exceeds_target():
    rng = random.Random(1)
    for _ in range(2000):
        w, h = rng.randint(1, 5000), rng.randint(1, 5000)
        W, H = rng.randint(1, 1000), rng.randint(1, 1000)
        fw, fh = fit_size(w, h, W, H)
        assert 1 <= fw <= W and 1 <= fh <= H
        assert fw == W or fh == H


def test_fit_size_rejects_zero():
    with pytest.raises(ValueError):
        fit_size(0, 10, 512, 512)


# --- output shape -----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(300, 600), (600, 300), (200, 200), (5, 3), (1, 1)])
def test_output_is_exactly_target_rgb_png(tmp_path, size):
    out = run(tmp_path, encode(noise(*size)), 96, 96)
    assert out.format == "PNG"
    assert out.mode == "RGB"
    assert out.size == (96, 96)


def test_result_reports_source_and_output_size_and_hashes(tmp_path):
    data = encode(noise(30, 20))
    result = transform_image(data, str(tmp_path / "a.png"), 64, 48)
    assert result == ImageResult(30, 20, 64, 48, (tmp_path / "a.png").stat().st_size,
                                 hashlib.sha256(data).hexdigest(), result.phash)
    assert re.fullmatch(r"[0-9a-f]{16}", result.phash)


def test_non_square_target(tmp_path):
    out = run(tmp_path, encode(Image.new("RGB", (50, 50), GREEN)), 80, 40)
    assert out.size == (80, 40)
    assert out.getcolors() == [(80 * 40, GREEN)]


def test_creates_parent_folders_and_replaces_existing(tmp_path):
    out = tmp_path / "a" / "b" / "x.png"
    transform_image(encode(Image.new("RGB", (8, 8), RED)), str(out), 16, 16)
    transform_image(encode(Image.new("RGB", (8, 8), BLUE)), str(out), 16, 16)
    assert Image.open(out).getpixel((8, 8)) == BLUE
    assert leftovers(tmp_path) == []


# --- edge padding -----------------------------------------------------------------------------

def distinct(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Every pixel a different colour, so any mis-copied pixel shows."""
    img = Image.new(mode, (w, h))
    pixels = [(x * 40 % 256, y * 40 % 256, (x + y) * 7 % 256) for y in range(h) for x in range(w)]
    img.putdata(pixels)
    return img


@pytest.mark.parametrize("size, target", [((3, 5), (9, 9)), ((5, 2), (8, 11)), ((4, 4), (4, 4)),
                                           ((1, 1), (3, 2)), ((6, 3), (6, 7))])
def test_pad_edge_replicates_nearest_edge_pixel(size, target):
    img = distinct(*size)
    (w, h), (W, H) = size, target
    out = pad_edge(img, W, H)
    assert out.size == (W, H) and out.mode == img.mode
    left, top = (W - w) // 2, (H - h) // 2
    for y in range(H):
        for x in range(W):
            sx = min(max(x - left, 0), w - 1)
            sy = min(max(y - top, 0), h - 1)
            assert out.getpixel((x, y)) == img.getpixel((sx, sy)), (x, y)


def test_pad_edge_keeps_palette():
    img = Image.new("P", (2, 2))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    img.putdata([1, 2, 1, 2])
    out = pad_edge(img, 6, 2)
    assert out.mode == "P"
    assert out.convert("RGB").getpixel((0, 0)) == RED
    assert out.convert("RGB").getpixel((5, 1)) == BLUE


def test_pad_edge_rejects_too_big():
    with pytest.raises(ValueError):
        pad_edge(Image.new("RGB", (10, 5)), 8, 8)


def test_transform_pads_with_edge_columns_not_a_solid_colour(tmp_path):
    # Portrait: left column red shading down to black, right column blue, middle green.
    w, h = 40, 80
    img = Image.new("RGB", (w, h), GREEN)
    for y in range(h):
        shade = 255 - y * 3
        for x in range(8):
            img.putpixel((x, y), (shade, 0, 0))
            img.putpixel((w - 1 - x, y), (0, 0, 255))
    out = run(tmp_path, encode(img), 64, 64)
    fit_w, _ = fit_size(w, h, 64, 64)
    left = (64 - fit_w) // 2
    assert left > 0
    for y in range(64):
        edge_left = out.getpixel((left, y))
        edge_right = out.getpixel((left + fit_w - 1, y))
        for x in range(left):
            assert out.getpixel((x, y)) == edge_left
        for x in range(left + fit_w, 64):
            assert out.getpixel((x, y)) == edge_right
        assert close(edge_right, BLUE)
    # The left pad follows the shading row by row (so it is not one colour).
    assert out.getpixel((0, 0))[0] > 200 and out.getpixel((0, 63))[0] < 80


def test_landscape_pads_top_and_bottom_rows(tmp_path):
    img = Image.new("RGB", (80, 40), GREEN)
    for x in range(80):
        img.putpixel((x, 0), RED)
        img.putpixel((x, 39), BLUE)
    out = run(tmp_path, encode(img), 80, 80)
    assert out.getpixel((40, 0)) == out.getpixel((40, 20))  # top pad == first content row
    assert out.getpixel((40, 79)) == out.getpixel((40, 59))
    assert out.getpixel((40, 0))[0] > out.getpixel((40, 0))[2]  # reddish
    assert out.getpixel((40, 79))[2] > out.getpixel((40, 79))[0]  # bluish


# --- colour modes -----------------------------------------------------------------------------

def test_rgba_transparent_becomes_white(tmp_path):
    img = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    for y in range(20):
        for x in range(10, 20):
            img.putpixel((x, y), (255, 0, 0, 255))
    out = run(tmp_path, encode(img), 20, 20)
    assert out.getpixel((2, 10)) == WHITE
    assert out.getpixel((17, 10)) == RED


def test_rgba_half_transparent_blends_with_white():
    img = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    assert close(to_rgb(img).getpixel((0, 0)), (127, 127, 127), 2)


def test_la_transparent_becomes_white(tmp_path):
    img = Image.new("LA", (10, 10), (0, 0))
    img.putpixel((9, 9), (0, 255))
    out = run(tmp_path, encode(img), 10, 10)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((9, 9)) == (0, 0, 0)


def test_palette_with_transparency_becomes_white(tmp_path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    for x in range(5, 10):
        for y in range(10):
            img.putpixel((x, y), 1)
    img.info["transparency"] = 0
    data = encode(img, transparency=0)
    out = run(tmp_path, data, 10, 10)
    assert out.getpixel((1, 5)) == WHITE
    assert out.getpixel((8, 5)) == BLUE


def test_palette_without_transparency(tmp_path):
    img = Image.new("RGB", (10, 10), RED).convert("P")
    assert run(tmp_path, encode(img, "GIF"), 10, 10).getpixel((5, 5)) == RED


def test_rgb_png_with_transparent_colour_key():
    img = Image.open(io.BytesIO(encode(Image.new("RGB", (4, 4), RED), transparency=RED)))
    assert to_rgb(img).getpixel((0, 0)) == WHITE


def test_cmyk_jpeg_becomes_cyan(tmp_path):
    img = Image.new("CMYK", (32, 32), (255, 0, 0, 0))
    out = run(tmp_path, encode(img, "JPEG", quality=95), 32, 32)
    r, g, b = out.getpixel((16, 16))
    assert r < 40 and g > 200 and b > 200


def test_cmyk_tiff_becomes_cyan(tmp_path):
    img = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    assert close(run(tmp_path, encode(img, "TIFF"), 8, 8).getpixel((4, 4)), (0, 255, 255))


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    img = Image.new("I;16", (30, 10), 0)
    for y in range(10):
        for x in range(10, 20):
            img.putpixel((x, y), 32768)
        for x in range(20, 30):
            img.putpixel((x, y), 65535)
    data = encode(img)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = run(tmp_path, data, 30, 10)
    assert out.getpixel((5, 5)) == (0, 0, 0)
    assert close(out.getpixel((15, 5)), (128, 128, 128), 2)
    assert out.getpixel((25, 5)) == WHITE


@pytest.mark.parametrize(
    "mode, value, expected",
    [("I", 65535, 255), ("I", 200, 200), ("F", 0.5, 127), ("F", 65535.0, 255)],
)
def test_deep_grey_modes(mode, value, expected):
    grey = to_rgb(Image.new(mode, (2, 2), value)).getpixel((0, 0))
    assert close(grey, (expected,) * 3, 1)


@pytest.mark.parametrize("mode", ["1", "L"])
def test_bilevel_and_grey(tmp_path, mode):
    out = run(tmp_path, encode(Image.new(mode, (8, 8), 255 if mode == "L" else 1)), 8, 8)
    assert out.mode == "RGB" and out.getpixel((3, 3)) == WHITE


def test_exif_orientation_is_applied(tmp_path):
    # Stored landscape: left half red, right half blue. Orientation 6 means "rotate 90 degrees
    # clockwise to display", so the picture is portrait with red on top.
    raw = Image.new("RGB", (80, 40), RED)
    raw.paste(Image.new("RGB", (40, 40), BLUE), (40, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(raw, "JPEG", quality=95, exif=exif)
    result = transform_image(data, str(tmp_path / "r.png"), 64, 64)
    assert (result.source_width, result.source_height) == (40, 80)
    out = Image.open(tmp_path / "r.png")
    assert close(out.getpixel((32, 8)), RED, 30)
    assert close(out.getpixel((32, 56)), BLUE, 30)
    # Portrait content (32 x 64) padded left and right from its edge columns.
    assert out.getpixel((0, 8)) == out.getpixel((16, 8))


def test_broken_exif_does_not_lose_the_image(tmp_path):
    data = encode(Image.new("RGB", (16, 16), RED), "JPEG", exif=b"Exif\x00\x00garbage-not-tiff")
    out = run(tmp_path, data, 16, 16)
    assert close(out.getpixel((8, 8)), RED, 10)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE, GREEN)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = Image.open(io.BytesIO(data))
    assert img.n_frames == 3
    img.seek(2)  # to_rgb must go back to frame 0 even when handed a later frame
    assert to_rgb(img).getpixel((5, 5)) == RED
    assert run(tmp_path, data, 20, 20).getpixel((10, 10)) == RED


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_common_formats(tmp_path, fmt):
    out = run(tmp_path, encode(Image.new("RGB", (24, 12), GREEN), fmt), 32, 32)
    assert close(out.getpixel((16, 16)), GREEN, 12)


def test_jpeg_draft_decodes_big_photo_to_right_size(tmp_path):
    big = Image.new("RGB", (4000, 3000), RED)
    big.paste(Image.new("RGB", (2000, 3000), BLUE), (2000, 0))
    result = transform_image(encode(big, "JPEG"), str(tmp_path / "b.png"), 128, 128)
    assert (result.source_width, result.source_height) == (4000, 3000)
    out = Image.open(tmp_path / "b.png")
    assert close(out.getpixel((10, 64)), RED, 20) and close(out.getpixel((118, 64)), BLUE, 20)


# --- resampling -------------------------------------------------------------------------------

def test_area_downscale_of_checkerboard_is_mid_grey(tmp_path):
    board = Image.new("L", (512, 512))
    board.putdata([255 * ((x + y) % 2) for y in range(512) for x in range(512)])
    out = run(tmp_path, encode(board), 64, 64)
    for low, high in out.getextrema():  # per band
        assert low >= 120 and high <= 135


def test_upscale_is_smooth(tmp_path):
    img = Image.new("L", (2, 1))
    img.putdata([0, 255])
    out = run(tmp_path, encode(img), 64, 32)
    # BICUBIC gives intermediate values; NEAREST would give only 0 and 255.
    assert len({out.getpixel((x, 16))[0] for x in range(64)}) > 4


# --- failures ---------------------------------------------------------------------------------

def assert_fails(tmp_path: Path, data: bytes, reason: str, **kw) -> ImageError:
    out = tmp_path / "dst" / "x.png"
    with pytest.raises(ImageError) as info:
        transform_image(data, str(out), 64, 64, **kw)
    assert info.value.reason == reason
    assert not out.exists()
    assert leftovers(tmp_path) == []
    return info.value


def test_truncated_jpeg(tmp_path):
    data = encode(noise(300, 300), "JPEG", quality=90)
    err = assert_fails(tmp_path, data[: len(data) // 2], "truncated_image")
    assert "truncat" in str(err).lower()


def test_truncated_png(tmp_path):
    data = encode(noise(300, 300))
    assert_fails(tmp_path, data[: len(data) // 2], "truncated_image")


def test_truncated_image_keeps_existing_file(tmp_path):
    out = tmp_path / "dst" / "x.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    data = encode(noise(300, 300), "JPEG")
    with pytest.raises(ImageError):
        transform_image(data[:2000], str(out))
    assert out.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "data",
    [
        random.Random(7).randbytes(5000),
        b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>",
        b"",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS is not an allowed format
    ],
    ids=["random", "html", "empty", "eps"],
)
def test_not_an_image(tmp_path, data):
    assert_fails(tmp_path, data, "not_an_image")


def png_with_claimed_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims another size (CRC fixed so Pillow trusts it)."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    # Signature (8) + length (4) + b"IHDR" (4), then width and height; CRC follows the 13 bytes.
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_decompression_bomb_header_is_refused_quickly(tmp_path):
    start = time.perf_counter()
    err = assert_fails(tmp_path, png_with_claimed_size(30000, 30000), "too_many_pixels")
    assert time.perf_counter() - start < 1.0
    assert "30000" in str(err) or "900000000" in str(err)


def test_our_cap_is_checked_before_decoding(tmp_path):
    # 2000x2000 is far below Pillow's own limit, so only our cap can refuse it.
    assert_fails(tmp_path, png_with_claimed_size(2000, 2000), "too_many_pixels",
                 max_pixels=1_000_000)


def test_our_cap_decides_over_pillows(tmp_path, monkeypatch):
    # Pillow's guard (set tiny here) must not refuse an image our cap allows.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    out = run(tmp_path, encode(noise(100, 100)), 32, 32, max_pixels=1_000_000)
    assert out.size == (32, 32)


def test_writes_through_hidden_temp_file_in_same_folder(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    out = tmp_path / "x.png"
    transform_image(encode(noise(10, 10)), str(out), 16, 16)
    [(src, dst)] = seen
    assert dst == out and src.parent == tmp_path
    assert src.name.startswith(".") and src.name.endswith(".tmp")
    assert (out.stat().st_mode & 0o777) == 0o644


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    out = tmp_path / "x.png"
    with pytest.raises(OSError):
        transform_image(encode(noise(10, 10)), str(out), 16, 16)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_image_error_is_an_item_error_and_pickles():
    err = ImageError("truncated_image", "image file is truncated")
    assert isinstance(err, ItemError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.detail, str(copy)) == (err.reason, err.detail, str(err))
    assert str(ImageError("not_an_image")) == "not_an_image"


def test_runs_in_a_process_pool(tmp_path):
    good = encode(noise(40, 20))
    with ProcessPoolExecutor(max_workers=1) as pool:
        result = pool.submit(transform_image, good, str(tmp_path / "ok.png"), 32, 32).result()
        assert result.width == 32 and os.path.exists(tmp_path / "ok.png")
        with pytest.raises(ImageError) as info:
            pool.submit(transform_image, b"nope", str(tmp_path / "bad.png")).result()
    assert info.value.reason == "not_an_image"


def test_animated_webp_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in (BLUE, RED, GREEN)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100,
                  lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert run(tmp_path, data, 20, 20).getpixel((10, 10)) == BLUE


# --- resize quality against a full decode -----------------------------------------------------

def psnr(a: Image.Image, b: Image.Image) -> float:
    import numpy as np

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mse = float((diff ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def demo_photos():
    """Product photos of the demo shop: large JPEGs (draft decoding applies), PNGs with and
    without alpha, small ones that are scaled up."""
    from ilid_async.demo.catalogue import build_catalogue

    images = {i for p in build_catalogue(60, seed=3).products for i in p.images if i.format != "SVG"}
    by_kind: dict[tuple, object] = {}
    for image in sorted(images, key=lambda i: i.name):
        kind = (image.format, image.alpha, image.width >= 1024, image.width <= 300)
        by_kind.setdefault(kind, image)
    return list(by_kind.values())


def test_resize_matches_an_antialiased_full_decode_at_40_db_or_better(tmp_path):
    from ilid_async.demo.server import render_image

    photos = demo_photos()
    assert any(p.format == "JPEG" and p.width >= 1024 for p in photos)  # draft mode is exercised
    for photo in photos:
        data = render_image(photo)
        ours = run(tmp_path, data, 512, 512).convert("RGB")
        full = to_rgb(Image.open(io.BytesIO(data)))
        full.load()
        reference = pad_edge(full.resize(fit_size(*full.size, 512, 512), Image.LANCZOS), 512, 512)
        assert psnr(ours, reference) >= 40, (photo.name, photo.width, photo.height)


# --- encodings and hashes ---------------------------------------------------------------------

@pytest.mark.parametrize("name, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_encodings(tmp_path, name, pil_format):
    data = encode(noise(120, 80))
    out = tmp_path / f"a.{Encoding(name).ending}"
    low = transform_image(data, str(out), 64, 64, encoding=Encoding(name, png_compress_level=1, quality=30))
    with Image.open(out) as img:
        assert (img.format, img.size, img.mode) == (pil_format, (64, 64), "RGB")
    high = transform_image(data, str(out), 64, 64, encoding=Encoding(name, png_compress_level=9, quality=95))
    if name == "png":  # the same pixels, more or less zlib effort
        assert high.bytes_written <= low.bytes_written
    else:  # lossy: higher quality keeps more of the noise, so the file grows
        assert high.bytes_written > low.bytes_written


def test_perceptual_hash_survives_reencoding_and_tells_parts_apart():
    from ilid_async.demo.server import render_image

    photos = [to_rgb(Image.open(io.BytesIO(render_image(p)))) for p in demo_photos()]
    hashes = [perceptual_hash(p) for p in photos]
    for photo, original in zip(photos, hashes):
        smaller = photo.resize((photo.width // 3 + 1, photo.height // 3 + 1), Image.BILINEAR)
        copy = Image.open(io.BytesIO(encode(smaller, "JPEG", quality=60)))
        assert hamming(perceptual_hash(copy), original) <= 4
    distinct = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(distinct) > 4


def test_hashes_come_back_from_the_transform(tmp_path):
    photo = noise(90, 60, seed=5)
    first = transform_image(encode(photo), str(tmp_path / "a.png"), 64, 64)
    again = transform_image(encode(photo, "PNG", compress_level=0), str(tmp_path / "b.png"), 64, 64)
    assert first.sha256 != again.sha256  # other bytes
    assert hamming(first.phash, again.phash) == 0  # the same picture


# --- the PNG writer (issue 14): libdeflate at the configured level, Up filter ---------------

def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk, each CRC checked: a valid PNG stream or an AssertionError."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        assert len(body) == length, kind
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        at += 12 + length
    assert at == len(data)
    return chunks


def assert_standard_rgb_png(data: bytes, size: tuple[int, int]) -> None:
    """What any PNG reader needs: IHDR first (8-bit RGB, no interlace), every unknown chunk
    ancillary, IDAT one zlib stream of one filter byte + 3 bytes a pixel per row, IEND last."""
    chunks = png_chunks(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    w, h, depth, colour, method, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (w, h) == size and (depth, colour, method, filtering, interlace) == (8, 2, 0, 0, 0)
    for kind in kinds:
        assert kind in (b"IHDR", b"IDAT", b"IEND") or kind[0:1].islower(), kind  # ancillary
    first, last = kinds.index(b"IDAT"), len(kinds) - 1 - kinds[::-1].index(b"IDAT")
    assert set(kinds[first:last + 1]) == {b"IDAT"}  # consecutive
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == h * (1 + 3 * w)
    assert all(raw[row * (1 + 3 * w)] <= 4 for row in range(h))  # filter types 0-4
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    try:
        import cv2
        import numpy as np
    except ImportError:
        return
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.shape == (h, w, 3)
    assert (decoded[:, :, ::-1] == np.asarray(Image.open(io.BytesIO(data)))).all()


def photo_like(w: int, h: int, seed: int = 0) -> Image.Image:
    """A product-photo-like picture: a gradient backdrop, a few shapes, mild noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (x / max(w - 1, 1) + y / max(h - 1, 1)) / 2
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    pixels = a * (1 - t[..., None]) + b * t[..., None]
    for _ in range(3):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.1, 0.4) * min(w, h)
        inside = np.clip((r - np.hypot(x - cx, y - cy)) / 3, 0, 1)[..., None]  # soft edge
        pixels = pixels * (1 - inside) + rng.integers(0, 256, 3) * inside
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def unfiltered_rows(data: bytes, size: tuple[int, int]):
    """The pixels of an RGB PNG decoded here, not by Pillow: IDAT inflated by zlib, each row
    unfiltered by its filter type (None and Up only: the types encode_png writes)."""
    import numpy as np

    w, h = size
    raw = np.frombuffer(zlib.decompress(b"".join(b for k, b in png_chunks(data) if k == b"IDAT")), np.uint8)
    rows = raw.reshape(h, 1 + 3 * w)
    assert set(rows[:, 0].tolist()) <= {0, 2}
    pixels = np.zeros((h, 3 * w), np.uint8)
    for y in range(h):
        above = pixels[y - 1] if y else np.zeros(3 * w, np.uint8)
        pixels[y] = rows[y, 1:] + (above if rows[y, 0] == 2 else 0)  # uint8: modulo 256
    return pixels.tobytes()


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("size", [(1, 1), (3, 7), (97, 131), (511, 2), (2, 511), (512, 512)])
def test_encode_png_is_standard_and_has_pillows_pixels(size, level):
    img = photo_like(*size, seed=size[0] + level)
    data = images.encode_png(img, level)
    assert_standard_rgb_png(data, size)
    assert unfiltered_rows(data, size) == img.tobytes()  # decoded without Pillow
    with Image.open(io.BytesIO(data)) as ours, Image.open(io.BytesIO(encode(img))) as pillows:
        assert ours.mode == pillows.mode == "RGB"
        assert ours.tobytes() == pillows.tobytes() == img.tobytes()


def test_encode_png_levels_trade_time_for_size():
    img = photo_like(256, 192, seed=4)
    sizes = [len(images.encode_png(img, level)) for level in (0, 1, 6, 9)]
    assert sizes[0] > 3 * 256 * 192  # level 0 stores: one filter byte a row plus the pixels
    assert sizes[0] > sizes[1] >= sizes[2] >= sizes[3]


def test_encode_png_refuses_other_modes():
    with pytest.raises(ValueError, match="RGB"):
        images.encode_png(Image.new("RGBA", (2, 2)), 6)


@pytest.mark.parametrize("level", [0, 1, 6, 9])
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (512, 300)])
def test_written_png_has_the_same_pixels_at_every_level(tmp_path, level, size):
    data = encode(photo_like(300, 200, seed=level), "JPEG", quality=90)
    out = tmp_path / "x.png"
    result = transform_image(data, str(out), *size, encoding=Encoding("png", level))
    png = out.read_bytes()
    assert result.bytes_written == len(png)
    assert_standard_rgb_png(png, size)
    with Image.open(out) as ours:
        assert ours.tobytes() == unfiltered_rows(png, size)
        level0 = tmp_path / "0.png"
        transform_image(data, str(level0), *size, encoding=Encoding("png", 0))
        with Image.open(level0) as stored:
            assert ours.tobytes() == stored.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("size", [(300, 600), (600, 300), (5, 3), (1, 1), (2000, 1500)])
def test_geometry_is_the_same_at_every_png_level(tmp_path, size):
    data = encode(photo_like(*size, seed=1), "JPEG", quality=92)
    outs = []
    for level in (1, 6):
        out = tmp_path / f"{level}.png"
        transform_image(data, str(out), 96, 80, encoding=Encoding("png", level))
        with Image.open(out) as img:
            assert (img.size, img.mode) == ((96, 80), "RGB")
            outs.append(img.tobytes())
    assert outs[0] == outs[1]


# --- PNG and WebP decoded by libpng and libwebp through imagecodecs (issue 14) ---------------

needs_imagecodecs = pytest.mark.skipif(images.STILL_DECODER == "Pillow", reason="imagecodecs is not installed")


@needs_imagecodecs
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (97, 131), (640, 480)])
def test_libwebp_decodes_a_lossless_webp_to_pillows_pixels(mode, size):
    img = photo_like(*size, seed=size[0])
    if mode == "RGBA":
        img.putalpha(Image.linear_gradient("L").resize(size))
    data = encode(img, "WEBP", lossless=True, exact=True)  # exact: keeps colour under alpha 0
    with Image.open(io.BytesIO(data)) as probe:
        decoded = images.decode_webp(data, probe)
        probe.load()
        assert decoded is not None and decoded.mode == probe.mode == mode
        assert decoded.tobytes() == probe.tobytes() == img.tobytes()


@needs_imagecodecs
def test_libwebp_decodes_a_lossy_webp_like_pillow():
    img = photo_like(800, 600, seed=8)
    data = encode(img, "WEBP", quality=80)
    with Image.open(io.BytesIO(data)) as probe:
        decoded = images.decode_webp(data, probe)
        probe.load()
        assert decoded is not None and decoded.size == probe.size
        assert psnr(decoded, probe) >= 50  # the same codec; versions may round differently


@needs_imagecodecs
def test_libwebp_leaves_animated_and_broken_webps_to_pillow(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in (BLUE, RED)]
    animated = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    with Image.open(io.BytesIO(animated)) as probe:
        assert images.decode_webp(animated, probe) is None
    scrambled = bytearray(encode(noise(300, 200), "WEBP", lossless=True))
    for i in range(40, len(scrambled)):  # the header stays readable, the bitstream does not
        scrambled[i] ^= 0x5A
    with Image.open(io.BytesIO(bytes(scrambled))) as probe:
        assert images.decode_webp(bytes(scrambled), probe) is None
    with pytest.raises(ImageError) as e:  # Pillow decodes it and gives the reason, as before
        transform_image(bytes(scrambled), str(tmp_path / "t.png"), 64, 64)
    assert e.value.reason == "not_an_image"
    assert leftovers(tmp_path) == []


@needs_imagecodecs
@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_our_decoders_keep_the_exif_orientation(tmp_path, fmt, orientation):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(distinct(7, 4), fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    result = transform_image(data, str(tmp_path / "o.png"), *expected.size)
    assert (result.source_width, result.source_height) == expected.size
    assert Image.open(tmp_path / "o.png").tobytes() == expected.convert("RGB").tobytes()


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks)


@needs_imagecodecs
@pytest.mark.parametrize("orientation", [6, 8])  # they swap the sides, so a miss shows in the size
def test_a_png_exif_chunk_after_the_pixels_still_turns_the_picture(tmp_path, orientation):
    # Some writers put eXIf after IDAT; Pillow finds it only once every pixel is decoded, our
    # chunk walk finds it without.
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    chunks = png_chunks(encode(distinct(7, 4), "PNG", exif=exif))
    exif_chunk = next(c for c in chunks if c[0] == b"eXIf")
    chunks.remove(exif_chunk)
    chunks.insert(-1, exif_chunk)  # just before IEND
    data = png_from_chunks(chunks)
    assert images.png_plan(data) == (True, b"Exif\x00\x00" + exif_chunk[1])
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert expected.size == (4, 7)  # Pillow turned it too
    result = transform_image(data, str(tmp_path / "o.png"), *expected.size)
    assert (result.source_width, result.source_height) == expected.size
    assert Image.open(tmp_path / "o.png").tobytes() == expected.tobytes()


@needs_imagecodecs
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("size", [(1, 1), (97, 131), (640, 480)])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_libpng_decodes_a_png_to_pillows_pixels(mode, size, level):
    img = photo_like(*size, seed=size[1])
    if mode == "RGBA":
        img.putalpha(Image.linear_gradient("L").resize(size))
    data = encode(img, "PNG", compress_level=level)
    assert images.png_plan(data) == (True, None)
    with Image.open(io.BytesIO(data)) as probe:
        decoded = images.decode_png(data, probe, None)
        probe.load()
        assert decoded is not None and decoded.mode == probe.mode == mode
        assert decoded.tobytes() == probe.tobytes()


def pngs_left_to_pillow() -> dict[str, bytes]:
    rgb = photo_like(40, 30, seed=3)
    frames = [Image.new("RGB", (20, 20), c) for c in (BLUE, RED)]
    return {
        "grey": encode(rgb.convert("L")),
        "grey+alpha": encode(rgb.convert("LA")),
        "palette": encode(rgb.convert("P")),
        "16-bit grey": encode(Image.linear_gradient("L").resize((40, 30)).convert("I;16")),
        "RGB colour key": encode(rgb, transparency=tuple(rgb.getpixel((0, 0)))),
        "animated": encode(frames[0], save_all=True, append_images=frames[1:], duration=100),
        "not a PNG": encode(rgb, "JPEG"),
    }


@needs_imagecodecs
@pytest.mark.parametrize("name", list(pngs_left_to_pillow()))
def test_pngs_libpng_would_read_differently_go_to_pillow(tmp_path, monkeypatch, name):
    data = pngs_left_to_pillow()[name]
    assert images.png_plan(data)[0] is False
    ours = transform_image(data, str(tmp_path / "a.png"), 32, 32)
    monkeypatch.setattr(images, "_imagecodecs", lambda: None)
    pillows = transform_image(data, str(tmp_path / "b.png"), 32, 32)
    assert ours == pillows
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@needs_imagecodecs
def test_a_png_16_bits_deep_goes_to_pillow():
    import numpy as np

    deep = np.random.default_rng(1).integers(0, 65535, (20, 30, 3), dtype=np.uint16)
    import imagecodecs

    data = imagecodecs.png_encode(deep)
    assert data[24] == 16 and images.png_plan(data) == (False, None)


def outcome(data: bytes, path: Path) -> tuple:
    """What transform_image makes of ``data``: the reason it refused, or the result and file."""
    try:
        result = transform_image(data, str(path), 64, 64)
    except ImageError as e:
        assert not path.exists()
        return ("refused", e.reason)
    return ("written", result, path.read_bytes())


@needs_imagecodecs
@pytest.mark.parametrize("damage", ["truncated", "bad crc", "chunk walk runs off", "bad pixel data"])
def test_a_damaged_png_ends_as_pillow_alone_would_end_it(tmp_path, monkeypatch, damage):
    data = bytearray(encode(noise(300, 200)))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "bad crc":
        data[len(data) // 2] ^= 0xFF  # inside the image data: its CRC no longer matches
    elif damage == "chunk walk runs off":
        data[33:37] = struct.pack(">I", 2**31)  # the first chunk after IHDR claims 2 GB
    else:
        idat = data.index(b"IDAT")
        for i in range(idat + 10, idat + 400):  # a scrambled deflate stream, CRC made to fit
            data[i] ^= 0x5A
        (length,) = struct.unpack(">I", data[idat - 4:idat])
        data[idat + 4 + length:idat + 8 + length] = struct.pack(">I", zlib.crc32(data[idat:idat + 4 + length]))
    data = bytes(data)
    with Image.open(io.BytesIO(data)) as probe:
        usable, exif = images.png_plan(data)
        assert not usable or images.decode_png(data, probe, exif) is None  # libpng refuses
    ours = outcome(data, tmp_path / "a.png")
    monkeypatch.setattr(images, "_imagecodecs", lambda: None)
    assert ours == outcome(data, tmp_path / "b.png")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_without_imagecodecs_pillow_writes_the_same_file(tmp_path, monkeypatch, fmt):
    img = photo_like(300, 200, seed=2)
    if fmt == "PNG":
        img.putalpha(Image.linear_gradient("L").resize(img.size))
    data = encode(img, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    first = transform_image(data, str(tmp_path / "a.png"), 64, 64)
    monkeypatch.setattr(images, "_imagecodecs", lambda: None)
    with Image.open(io.BytesIO(data)) as probe:
        assert images.decode_webp(data, probe) is None
        assert images.decode_png(data, probe, None) is None
    assert transform_image(data, str(tmp_path / "b.png"), 64, 64) == first
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


# --- no needless copies -----------------------------------------------------------------------

def test_to_rgb_does_not_copy_an_rgb_image_shown_as_stored():
    img = Image.open(io.BytesIO(encode(photo_like(40, 30))))
    assert to_rgb(img) is img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(tmp_path, orientation):
    from PIL import ImageOps

    raw = distinct(7, 4)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(raw, "PNG", exif=exif)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert to_rgb(Image.open(io.BytesIO(data))).tobytes() == expected.tobytes()
    result = transform_image(data, str(tmp_path / "o.png"), *expected.size)
    assert (result.source_width, result.source_height) == expected.size
    assert Image.open(tmp_path / "o.png").tobytes() == expected.tobytes()  # 1:1, no resize


# --- resize quality on every source format ----------------------------------------------------

SOURCE_FORMATS = {
    "jpeg": ("JPEG", {"quality": 90}),
    "jpeg-progressive": ("JPEG", {"quality": 85, "progressive": True}),
    "png": ("PNG", {"compress_level": 1}),
    "webp": ("WEBP", {"quality": 85}),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SOURCE_FORMATS))
@pytest.mark.parametrize("size", [(1800, 1200), (900, 1400), (640, 640), (250, 250)])
def test_scaled_decode_and_resize_meet_40_db_on_every_format(tmp_path, kind, size):
    fmt, params = SOURCE_FORMATS[kind]
    data = encode(photo_like(*size, seed=size[0] + size[1]), fmt, **params)
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.format == fmt and probe.size == size
    ours = run(tmp_path, data, 512, 512)
    full = to_rgb(Image.open(io.BytesIO(data)))
    reference = pad_edge(full.resize(fit_size(*full.size, 512, 512), Image.LANCZOS), 512, 512)
    assert psnr(ours, reference) >= 40, (kind, size)


def test_alpha_onto_white_equals_alpha_composite_for_every_colour_and_alpha():
    import numpy as np

    c, a = np.meshgrid(np.arange(256), np.arange(256))
    rgba = Image.fromarray(np.stack([c, 255 - c, c // 2, a], -1).astype(np.uint8), "RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected = Image.alpha_composite(white, rgba).convert("RGB")
    assert to_rgb(rgba).tobytes() == expected.tobytes()
    la = rgba.convert("LA")  # the other alpha modes go through RGBA
    expected = Image.alpha_composite(white, la.convert("RGBA")).convert("RGB")
    assert to_rgb(la).tobytes() == expected.tobytes()


@pytest.mark.parametrize("durable, fsyncs", [(True, 2), (False, 0)])
def test_durable_writes_fsync_the_image_and_its_folder(tmp_path, monkeypatch, durable, fsyncs):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    out = tmp_path / "d.png"
    transform_image(encode(noise(40, 30)), str(out), 32, 32, durable=durable)
    assert len(calls) == fsyncs  # the file before the rename, the folder after it
    with Image.open(out) as img:
        assert img.size == (32, 32)
