"""Image transform: bytes -> decode -> fit -> pad -> PNG (or JPEG, WebP) on disk (rules §6).

``transform_image`` is a plain, picklable function meant to run in a process pool: it takes the
downloaded bytes and a target path and either writes the finished image atomically or raises
``ImageError`` with a short reason. It also returns two hashes for finding duplicates: SHA-256
of the downloaded bytes (exact copies) and a 64-bit perceptual hash of the picture (near
copies: the same photo re-encoded or resized). Only Pillow APIs that also exist in Pillow 9.x /
pillow-simd are used. PNGs are written by libdeflate (encode_png); 8-bit RGB(A) PNGs and still
WebPs are decoded by libpng and libwebp through imagecodecs (decode_png, decode_webp); Pillow
does the rest.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import struct
import sys
import warnings
from dataclasses import dataclass
from typing import cast
from importlib.util import find_spec

import deflate  # libdeflate: the PNG writer's compressor (encode_png)
from PIL import Image, ImageFile

from ilid_async import reasons
from ilid_async.atomic import write_atomic
from ilid_async.errors import NO_SPACE_ERRNOS, ItemError
from ilid_async.workers import LoopPool

__all__ = [
    "ALLOWED_FORMATS", "ImageError", "write_failure", "ImageWriteError", "ImageResult", "ENCODERS",
    "PNG_ENCODER", "encode_png", "STILL_DECODER", "decode_webp", "png_plan", "decode_png", "Encoding",
    "perceptual_hash", "hamming", "fit_size", "pad_edge", "to_rgb", "transform_image", "MALLOC_KEEP_BLOCKS",
    "MALLOC_KEEP_FREE", "keep_freed_memory", "prepare_image_worker", "image_pool"
]

# Pillow >= 9.1 moved the filter constants to Image.Resampling; older ones (and pillow-simd)
# only have them on Image.
_RESAMPLING = getattr(Image, "Resampling", Image)
_BOX = _RESAMPLING.BOX
_BICUBIC = _RESAMPLING.BICUBIC
_NEAREST = _RESAMPLING.NEAREST

# Formats a web shop plausibly serves. Restricting Image.open to these keeps crawled bytes away
# from plugins that shell out (EPS runs Ghostscript) or are rarely exercised.
ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF",
)

_EXIF_ORIENTATION = 0x0112
# How to display a stored image with each EXIF orientation (1 = as stored, no copy needed).
_T = getattr(Image, "Transpose", Image)  # Image.Transpose since Pillow 9.1
_TRANSPOSE = {
    2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
    6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90,
}
_WHITE = (255, 255, 255, 255)
# Pillow's resize first averages whole blocks of pixels (reduce) while at least this many times the
# target is left, then filters with antialiased bicubic. 1.0 (the least bicubic work) took the
# resize of large PNGs and WebPs from 11.7 to 6.5 ms with 47 dB or more against a full Lanczos
# resize (50 dB with 3.0; the tests' 40 dB bound holds either way).
_REDUCING_GAP = 1.0


class ImageError(ItemError):
    """An image could not be turned into a dataset PNG; ``reason`` is the short stored name:
    ``not_an_image``, ``truncated_image``, ``too_many_pixels``, ``empty_image``,
    ``unsupported_mode``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)

    def __reduce__(self):
        # Exceptions pickle as cls(*args); ItemError's args hold the joined message, which would
        # turn into the reason when the error crosses back from a pool worker.
        return (type(self), (self.reason, self.detail))


_WRITE_REASONS = {
    errno.EEXIST: reasons.FOLDER_IS_A_FILE,  # a file where the image's folder should be
    errno.ENOTDIR: reasons.FOLDER_IS_A_FILE,
    errno.EISDIR: reasons.FILE_IS_A_FOLDER,  # a folder where the image file should be
    errno.ENOTEMPTY: reasons.FILE_IS_A_FOLDER,
    errno.ENAMETOOLONG: reasons.NAME_TOO_LONG,  # as `download` calls it too
    errno.EACCES: reasons.WRITE_NOT_PERMITTED,
    errno.EPERM: reasons.WRITE_NOT_PERMITTED,
    errno.EROFS: reasons.WRITE_NOT_PERMITTED,
}


def write_failure(e: OSError) -> str:
    """The reason for an OSError while writing an image: reasons.DISK_FULL, or the record's
    failure (write_error when no more specific one fits)."""
    if e.errno in NO_SPACE_ERRNOS:
        return reasons.DISK_FULL
    return reasons.WRITE_ERROR if e.errno is None else _WRITE_REASONS.get(e.errno, reasons.WRITE_ERROR)


class ImageWriteError(ImageError, OSError):
    """The finished image could not be written: an OSError, and an ImageError whose
    ``reason`` is write_failure's (so the pipeline records it like any image failure)."""


@dataclass(frozen=True)
class ImageResult:
    """What ``transform_image`` did. ``source_*`` is the size as displayed (EXIF orientation
    applied), from the file header; ``width``/``height`` is the written PNG's size."""

    source_width: int
    source_height: int
    width: int
    height: int
    bytes_written: int
    sha256: str = ""  # of the downloaded bytes
    phash: str = ""  # 16 hex digits, see perceptual_hash


# Encoders by config name: (Pillow format, file ending).
ENCODERS = {"png": ("PNG", "png"), "jpeg": ("JPEG", "jpg"), "webp": ("WEBP", "webp")}


# PNG levels keep zlib's meaning (0 stored, 1 fastest ... 9 smallest) and go to libdeflate at the
# same level. On 512x512 photos (issue 14) it was 4x faster than zlib at level 6 (14.7 ms against
# Pillow's 69.7 ms) with files no larger (186 KiB against 190 KiB), and at level 1 4.7 ms against
# 19.3 ms with smaller files (206 against 226 KiB).
PNG_ENCODER = f"libdeflate (deflate {getattr(deflate, '__version__', '?')}), Up filter"  # no metadata lookup at start-up
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTER_UP = 2


def _png_chunk(kind: bytes, body: bytes | bytearray) -> tuple[bytes, bytes, bytes | bytearray, bytes]:
    """A chunk's parts, for one join of the whole file (no copy of the image data per chunk);
    libdeflate's CRC-32 took 5 us for 200 KB where zlib's took 58."""
    return struct.pack(">I", len(body)), kind, body, struct.pack(">I", deflate.crc32(body, deflate.crc32(kind)))


def encode_png(img: Image.Image, level: int) -> bytes:
    """``img`` (RGB) as a standard 8-bit RGB PNG: every row Up-filtered (the difference to the
    row above, computed by numpy), one IDAT compressed by libdeflate at ``level``. Up was the
    smallest and fastest of Sub, Up and Paeth on photos and needs no per-row search; Pillow and
    libpng try all five filters per row, which costs more than it saves at the same level."""
    if img.mode != "RGB":
        raise ValueError(f"encode_png writes RGB, not {img.mode}")
    import numpy as np  # here, not at the top: commands that write no image start faster

    w, h = img.size
    rows = np.asarray(img).reshape(h, 3 * w)
    filtered = np.empty((h, 3 * w + 1), np.uint8)
    filtered[:, 0] = _PNG_FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as PNG defines it
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return b"".join((_PNG_SIGNATURE, *_png_chunk(b"IHDR", header),
                     *_png_chunk(b"IDAT", deflate.zlib_compress(filtered, level)), *_png_chunk(b"IEND", b"")))


# imagecodecs (libpng 1.6, libwebp 1.6): imported by the first PNG or WebP, not with
# this module (workers that only see JPEGs never load it).
STILL_DECODER = "imagecodecs" if find_spec("imagecodecs") is not None else "Pillow"


@functools.lru_cache(maxsize=1)
def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:  # pragma: no cover - imagecodecs is a dependency; this is the fallback
        return None
    return imagecodecs


def decode_webp(data: bytes, img: Image.Image) -> Image.Image | None:
    """The pixels of the still WebP ``data`` (opened lazily as ``img``) decoded by libwebp
    straight into RGB or RGBA, or None where Pillow must decode it (animated, imagecodecs
    missing, or a file libwebp refuses: Pillow then gives the reason). Pillow decodes every
    WebP through libwebp's animation decoder into RGBA and converts: 27 ms against 15 ms for
    the photos of bench_images. ``img``'s size has been checked against the pixel cap; its EXIF
    (orientation) is carried over."""
    codecs = _imagecodecs()
    if getattr(img, "is_animated", False) or img.mode not in ("RGB", "RGBA") or codecs is None:
        return None
    try:
        pixels = codecs.webp_decode(data, hasalpha=img.mode == "RGBA")
    except Exception:  # noqa: BLE001 - imagecodecs.WebpError and friends: Pillow decides
        return None
    return _from_pixels(pixels, img, img.info.get("exif"))


# PNG colour types libpng gives us as Pillow would (8-bit RGB, RGBA); the rest goes to Pillow.
_PNG_RGB, _PNG_RGBA = 2, 6
_EXIF_HEADER = b"Exif\x00\x00"  # how Pillow keeps a PNG's eXIf chunk in info["exif"]


def png_plan(data: bytes) -> tuple[bool, bytes | None]:
    """(whether libpng may decode this PNG, its EXIF) from a walk over the chunk headers, which
    reads no pixels. Pillow's PNG reader decodes the whole image to find an EXIF chunk after the
    image data; this walk finds it wherever it is. Only 8-bit RGB and RGBA without a tRNS colour
    key and not animated (APNG) are libpng's; others, and any walk that does not add up, are
    Pillow's."""
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return False, None
    depth, colour_type = data[24], data[25]
    usable = depth == 8 and colour_type in (_PNG_RGB, _PNG_RGBA)
    exif = None
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        if kind in (b"tRNS", b"acTL"):
            usable = False
        elif kind == b"eXIf" and exif is None:
            exif = _EXIF_HEADER + data[at + 8:at + 8 + length]
        elif kind == b"IEND":
            break
        at += 12 + length
    return usable, exif


def decode_png(data: bytes, img: Image.Image, exif: bytes | None) -> Image.Image | None:
    """The pixels of the 8-bit RGB or RGBA PNG ``data`` (``png_plan`` said yes; opened lazily as
    ``img``, its size checked against the pixel cap) decoded by libpng: 20 ms
    against Pillow's 28 ms for the PNGs of bench_images. None where Pillow must decode it (a
    file libpng refuses: Pillow gives the reason)."""
    codecs = _imagecodecs()
    if codecs is None:
        return None
    try:
        pixels = codecs.png_decode(data)
    except Exception:  # noqa: BLE001 - imagecodecs.PngError: a damaged file, Pillow decides
        return None
    return _from_pixels(pixels, img, exif)


def _from_pixels(pixels, img: Image.Image, exif: bytes | None) -> Image.Image | None:
    w, h = img.size
    if pixels.dtype != "uint8" or pixels.shape not in ((h, w, 3), (h, w, 4)):
        return None  # not what the header promised: Pillow decides
    decoded = Image.fromarray(pixels)
    if exif:
        decoded.info["exif"] = exif
    return decoded


@dataclass(frozen=True)
class Encoding:
    """How the finished image is written: format (a key of ENCODERS), PNG level (0-9, zlib's
    meaning, written by encode_png), JPEG/WebP quality (1-100)."""

    format: str = "png"
    png_compress_level: int = 6
    quality: int = 90

    @property
    def ending(self) -> str:
        return ENCODERS[self.format][1]


_HASH_SIDE = 32  # the picture is shrunk to this many pixels a side before the DCT


@functools.lru_cache(maxsize=1)
def _dct_matrix():
    import numpy as np

    k = np.arange(_HASH_SIDE)
    matrix = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * _HASH_SIDE))
    matrix *= np.sqrt(2 / _HASH_SIDE)
    matrix[0] /= np.sqrt(2)
    return matrix


def perceptual_hash(img: Image.Image) -> str:
    """64-bit perceptual hash (16 hex digits): shrink to 32x32 grey, take the 8x8 lowest
    frequencies of its DCT, one bit per frequency: above their median or not. Re-encoding and
    resizing change a few bits; on catalogue photos (one part on a plain background), where a
    gradient hash (dHash) called many different parts alike, distinct photos differ in far more
    bits than copies do."""
    import numpy as np

    pixels = np.asarray(img.convert("L").resize((_HASH_SIDE, _HASH_SIDE), _BOX), dtype=np.float64)
    matrix = _dct_matrix()
    low = (matrix @ pixels @ matrix.T)[:8, :8].ravel()
    above = low > np.median(low[1:])  # the DC term is the mean brightness: not in the median
    return f"{int(''.join('1' if bit else '0' for bit in above), 2):016x}"


def hamming(a: str, b: str) -> int:
    """Differing bits of two perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def fit_size(w: int, h: int, W: int, H: int) -> tuple[int, int]:
    """Largest size with w:h's aspect ratio that fits W x H (each side at least 1).

    Integer arithmetic, so the limiting side is exactly W or H and the other side is
    w*H/h (or h*W/w) rounded half up, never above its bound.
    """
    if min(w, h, W, H) <= 0:
        raise ValueError(f"sizes must be positive, got {w}x{h} into {W}x{H}")
    if W * h <= H * w:  # width is the limiting side (W/w <= H/h)
        new_h = (2 * h * W + w) // (2 * w)
        return W, max(1, min(H, new_h))
    new_w = (2 * w * H + h) // (2 * h)
    return max(1, min(W, new_w)), H


def pad_edge(img: Image.Image, W: int, H: int) -> Image.Image:
    """Centre ``img`` in W x H and fill the borders by repeating its edge pixels.

    Left/right borders repeat the first/last column, top/bottom borders repeat the first/last
    row of the widened image, so corners take the corner pixels.
    """
    w, h = img.size
    if w > W or h > H:
        raise ValueError(f"image {w}x{h} does not fit in {W}x{H}")
    left, top = (W - w) // 2, (H - h) // 2
    right, bottom = W - w - left, H - h - top
    # A crop larger than the image gives the canvas with the image in place and keeps the
    # mode and palette; every border pixel is overwritten below.
    out = img.crop((-left, -top, W - left, H - top))
    # Stretching a 1-pixel strip with NEAREST copies it exactly.
    if left:
        out.paste(img.crop((0, 0, 1, h)).resize((left, h), _NEAREST), (0, top))
    if right:
        out.paste(img.crop((w - 1, 0, w, h)).resize((right, h), _NEAREST), (left + w, top))
    if top:
        row = out.crop((0, top, W, top + 1))
        out.paste(row.resize((W, top), _NEAREST), (0, 0))
    if bottom:
        row = out.crop((0, top + h - 1, W, top + h))
        out.paste(row.resize((W, bottom), _NEAREST), (0, top + h))
    return out


def to_rgb(img: Image.Image) -> Image.Image:
    """Return an RGB image as a viewer would show ``img``'s first frame: EXIF orientation
    applied, transparency composited onto white, CMYK and high bit-depth grey converted."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    img.load()
    # Transposed only when the orientation says so (ImageOps.exif_transpose copies the whole
    # image even for orientation 1, the common case).
    method = _TRANSPOSE.get(_orientation(img))
    if method is not None:
        img = img.transpose(method)
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _deep_grey_to_rgb(img)
    if mode == "La":
        img = img.convert("LA")
        mode = "LA"
    has_alpha = mode in ("RGBA", "RGBa", "LA", "PA") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img if mode == "RGBA" else img.convert("RGBA")  # convert would copy an RGBA image
        # Pasting through the alpha onto white gives exactly alpha_composite's pixels on an
        # opaque white RGBA background (a test checks all colour/alpha pairs), with no RGBA
        # background and no RGBA result to convert: about 30% faster.
        out = Image.new("RGB", rgba.size, _WHITE[:3])
        out.paste(rgba, mask=rgba)
        return out
    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except ValueError as e:  # e.g. LAB, which Pillow converts only through ImageCms
        raise ImageError(reasons.UNSUPPORTED_MODE, f"cannot convert mode {mode} to RGB") from e


def _deep_grey_to_rgb(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer or float grey to 8 bits (Pillow's own conversion clips)."""
    if img.mode.startswith("I;16"):
        scale = 1 / 257  # 0..65535 -> 0..255
        img = img.convert("I")
    else:
        _low, high = cast("tuple[float, float]", img.getextrema())  # one band: (low, high)
        if img.mode == "F" and high <= 1.0:
            scale = 255.0  # float images are usually 0..1
        elif high <= 255:
            scale = 1.0
        elif high <= 65535:
            scale = 1 / 257
        else:
            scale = 255 / high
    grey = img.point(lambda v: v * scale)  # linear, so Pillow applies it in C
    return grey.convert("L").convert("RGB")


def transform_image(
    data: bytes,
    out_path: str,
    width: int = 512,
    height: int = 512,
    max_pixels: int = 50_000_000,
    encoding: Encoding | None = None,
    durable: bool = True,
) -> ImageResult:
    """Decode ``data``, fit it into ``width`` x ``height`` without distortion, pad by repeating
    the edges, and write an RGB image atomically to ``out_path`` (parent folders created), as
    ``encoding`` says (default: PNG, zlib level 6). ``durable``: fsync the file and its folder
    (atomic.write_atomic), so that it survives a power cut once this returns (the run's store then calls it
    done); without, it survives the process being killed, and the caller syncs later.

    Raises ``ImageError`` (nothing is left at ``out_path``, no temp file remains), an
    ``ImageWriteError`` if the file cannot be written.
    """
    encoding = encoding or Encoding()
    img = _open_checked(data, max_pixels)
    with img:
        decoded = None  # the pixels, where a decoder of our own got them (else img's, below)
        if img.format == "PNG":
            # Before the orientation: Pillow's PNG reader decodes every pixel to find the EXIF.
            usable, exif = png_plan(data)
            decoded = decode_png(data, img, exif) if usable else None
        orientation = _orientation(img if decoded is None else decoded)
        src_w, src_h = img.size
        if orientation in (5, 6, 7, 8):  # these orientations swap width and height
            src_w, src_h = src_h, src_w
        fit_w, fit_h = fit_size(src_w, src_h, width, height)
        if img.format in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while staying >= the fitted size:
            # much faster for big photos, and the resize below still does the final filtering.
            raw = (fit_h, fit_w) if orientation in (5, 6, 7, 8) else (fit_w, fit_h)
            img.draft("RGB", raw)
        if img.format == "WEBP":
            decoded = decode_webp(data, img)
        if decoded is None:
            _load(img)
            decoded = img
        rgb = to_rgb(decoded)  # may be img itself, so stay inside the with block
        if rgb.size != (fit_w, fit_h):
            # Pillow's bicubic is antialiased when shrinking (its support widens with the scale);
            # see _REDUCING_GAP. Plain BOX all the way was faster still but blocky at mild
            # ratios (30 dB against a full-decode Lanczos reference; this is 44 dB or more).
            rgb = rgb.resize((fit_w, fit_h), _BICUBIC, reducing_gap=_REDUCING_GAP)
        phash = perceptual_hash(rgb)  # of the picture itself, not of the padding
        # A picture that fills the canvas needs no padding (pad_edge would return a copy), but
        # the decoded image itself is written after the with block has closed it: copied.
        fills = rgb.size == (width, height) and rgb is not img
        out = rgb if fills else pad_edge(rgb, width, height)
    written = _write_atomic(out, out_path, encoding, durable)
    return ImageResult(src_w, src_h, width, height, written, hashlib.sha256(data).hexdigest(), phash)


def _open_checked(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Open lazily (header only) and refuse images over ``max_pixels`` before any pixel is
    decoded."""
    # Our cap decides: lift Pillow's own bomb guard to at least our cap (it then only errors
    # above twice our cap, which ours rejects anyway) and silence its warning. Only ever raised,
    # never lowered, so other code in the process keeps at least Pillow's default protection.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_allowed_formats())
    except Image.DecompressionBombError as e:
        raise ImageError(reasons.TOO_MANY_PIXELS, str(e)) from e
    except (Image.UnidentifiedImageError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(reasons.NOT_AN_IMAGE, str(e) or type(e).__name__) from e
    except OSError as e:
        raise ImageError(_reason_for(e), str(e)) from e
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        raise ImageError(reasons.EMPTY_IMAGE, f"image is {w}x{h}")
    if w * h > max_pixels:
        img.close()
        raise ImageError(
            reasons.TOO_MANY_PIXELS, f"{w}x{h} = {w * h} pixels is over the limit of {max_pixels}"
        )
    return img


def _allowed_formats() -> tuple[str, ...]:
    # Image.open only accepts names of registered plugins (AVIF needs Pillow >= 11.2).
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - unreadable EXIF means "as stored"
        return 1


def _load(img: Image.Image) -> None:
    """Decode the pixels, mapping Pillow's many failure types to our reasons."""
    try:
        img.load()
    except Image.DecompressionBombError as e:
        raise ImageError(reasons.TOO_MANY_PIXELS, str(e)) from e
    except (OSError, EOFError) as e:
        raise ImageError(_reason_for(e), str(e) or type(e).__name__) from e
    except (SyntaxError, ValueError, IndexError, TypeError) as e:
        raise ImageError(reasons.NOT_AN_IMAGE, str(e) or type(e).__name__) from e


def _reason_for(e: BaseException) -> str:
    # Pillow says "image file is truncated" / "Truncated File Read"; EOFError means the data
    # stopped early too.
    if isinstance(e, EOFError) or "truncated" in str(e).lower():
        return reasons.TRUNCATED_IMAGE
    return reasons.NOT_AN_IMAGE


def _write_atomic(img: Image.Image, out_path: str, encoding: Encoding, durable: bool = True) -> int:
    """Write ``img`` via a hidden temp file in the same folder and rename it into place, so
    ``out_path`` is either absent, the old file, or the complete new file. An OSError (full
    disk, a file where the folder should be, a name too long) is an ImageWriteError."""
    try:
        return _write_file(img, out_path, encoding, durable)
    except OSError as e:
        raise ImageWriteError(write_failure(e), f"{e.strerror or e}: {e.filename or out_path}") from None


def _write_file(img: Image.Image, out_path: str, encoding: Encoding, durable: bool) -> int:
    # PNG is encoded before the temp file exists; JPEG and WebP are written by Pillow.
    encoded = encode_png(img, encoding.png_compress_level) if encoding.format == "png" else None

    def write(f) -> int:
        if encoded is not None:
            f.write(encoded)
        else:
            img.save(f, format=ENCODERS[encoding.format][0], quality=encoding.quality)
        return f.tell()

    return write_atomic(out_path, write, durable=durable)


# glibc gives every freed block over 128 KiB back to the system, so each image's decode and
# resize buffers (1-12 MB) were mapped and zeroed by the kernel again for the next image. Kept
# in the heap instead (blocks up to 32 MiB, the largest glibc allows here; up to 128 MiB kept
# free), 400 photos took 7.5% less CPU (issue 14); the process's peak memory went from 257 to
# 264 MiB.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_KEEP_BLOCKS = 32 << 20
MALLOC_KEEP_FREE = 128 << 20


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for a process that transforms one image after another (see
    above); False where the C library is not glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_KEEP_BLOCKS)
                    and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_KEEP_FREE))
    except (OSError, AttributeError):
        return False


def prepare_image_worker() -> None:
    """Start-up of an image pool worker: keep freed memory (keep_freed_memory), and one BLAS
    thread for numpy (the perceptual hash's 32x32 DCT is far too small to share, and OpenBLAS's
    idle threads spin on the cores the other workers need). numpy is not loaded yet here:
    OpenBLAS reads its setting when it loads."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    keep_freed_memory()


def image_pool(workers: int = 0) -> LoopPool:
    """The process pool for transform_image: a LoopPool, which passes the downloaded bytes to
    its workers without the helper threads of ProcessPoolExecutor; workers start with
    prepare_image_worker."""
    return LoopPool(workers, prepare_image_worker)
