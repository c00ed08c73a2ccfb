"""Bad and unusual input files for core.imageio: every file is built here, in tmp_path.

Unusable files must raise `ImageError` with a message a user can act on; unusual but valid
files must come out as (H, W, 3) uint8 RGB with the right colours and orientation.
"""

from __future__ import annotations

import io
import resource
import struct
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from core.imageio import MAX_PIXELS, MIN_SIDE, ImageError, decode_image, read_image  # noqa: E402


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _smear_like(h: int = 224, w: int = 224, seed: int = 0) -> np.ndarray:
    """A textured pinkish image with purple blobs: compresses like a real smear JPEG."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[...] = (235, 205, 215)
    for _ in range(12):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(8, 30)
        cv2.circle(img, (int(cx), int(cy)), int(r), (120, 60, 160), -1)
    noise = rng.normal(0, 12, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(side: int = 30000, bit_depth: int = 1, color_type: int = 3) -> bytes:
    """A valid side x side PNG of zeros (palette, 1 bit per pixel by default), built row-block
    by row-block so that making it never holds more than a few MB (Pillow would allocate
    one byte per pixel, i.e. 900 MB). It decompresses to side*side pixels (900 MP)."""
    row = 1 + (side * bit_depth + 7) // 8  # filter byte + packed pixels
    rows_per_block = 1000
    block = bytes(row * rows_per_block)
    comp = zlib.compressobj(9)
    parts = []
    done = 0
    while done < side:
        n = min(rows_per_block, side - done)
        parts.append(comp.compress(block[: row * n]))
        done += n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, color_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", ihdr)]
    if color_type == 3:
        chunks.append(_png_chunk(b"PLTE", bytes((255, 255, 255, 0, 0, 0))))
    chunks.append(_png_chunk(b"IDAT", b"".join(parts)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _expect_error(path_or_bytes, *words: str) -> str:
    """Decode and require an ImageError whose message contains one of `words` (any case)."""
    with pytest.raises(ImageError) as info:
        if isinstance(path_or_bytes, Path):
            read_image(path_or_bytes)
        else:
            decode_image(path_or_bytes)
    msg = str(info.value)
    assert msg and msg[0].isupper(), f"message should be a plain sentence: {msg!r}"
    assert any(w.lower() in msg.lower() for w in words), f"{msg!r} names none of {words}"
    return msg


def _check_rgb(arr: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == (*shape, 3)
    assert arr.flags["C_CONTIGUOUS"]


# --------------------------------------------------------------------------------------------
# Files that must be refused
# --------------------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = _write(tmp_path, "empty.jpg", b"")
    _expect_error(path, "empty")
    _expect_error(b"", "empty")


def test_truncated_jpeg(tmp_path):
    full = _encode(Image.fromarray(_smear_like()), "JPEG", quality=90)
    assert decode_image(full).shape == (224, 224, 3)  # the uncut file is fine
    path = _write(tmp_path, "cut.jpg", full[: len(full) // 2])
    _expect_error(path, "truncated")


def test_truncated_png(tmp_path):
    full = _encode(Image.fromarray(_smear_like()), "PNG")
    path = _write(tmp_path, "cut.png", full[: len(full) // 2])
    _expect_error(path, "truncated", "damaged")


def test_text_file_named_jpg(tmp_path):
    path = _write(tmp_path, "notes.jpg", b"Patient notes: smear looks fine.\n" * 20)
    _expect_error(path, "not an image")


def test_pdf_named_jpg(tmp_path):
    pdf = (
        b"%PDF-1.4\n"
        b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
        b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >> endobj\n"
        b"xref\n0 4\n0000000000 65535 f \n"
        b"trailer << /Size 4 /Root 1 0 R >>\nstartxref\n0\n%%EOF\n"
    )
    path = _write(tmp_path, "report.jpg", pdf)
    _expect_error(path, "PDF")


@pytest.mark.parametrize("bit_depth,color_type", [(1, 3), (1, 0)], ids=["palette-1bit", "gray-1bit"])
def test_decompression_bomb_refused_from_header(tmp_path, bit_depth, color_type):
    data = _png_bomb(30000, bit_depth, color_type)
    assert len(data) < 200_000  # a small file ...
    with Image.open(io.BytesIO(data)) as im:  # ... that really claims 900 MP
        assert im.size == (30000, 30000)
    path = _write(tmp_path, "bomb.png", data)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        msg = _expect_error(path, "limit", "pixels")
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert "30000x30000" in msg
    assert elapsed < 3.0, f"refusing the bomb took {elapsed:.1f} s: pixels were decoded"
    assert peak < 50 * 2**20, f"Python allocations peaked at {peak / 2**20:.0f} MB"
    assert rss_growth_mb < 100, f"process memory grew by {rss_growth_mb:.0f} MB"


def test_pixel_limit_is_a_parameter():
    data = _encode(Image.fromarray(_smear_like(64, 64)), "PNG")
    assert decode_image(data).shape == (64, 64, 3)
    with pytest.raises(ImageError, match="limit"):
        decode_image(data, max_pixels=64 * 64 - 1)
    assert MAX_PIXELS >= 224 * 224


def test_animated_gif(tmp_path):
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    path = _write(tmp_path, "anim.gif", buf.getvalue())
    with Image.open(path) as im:
        assert im.n_frames == 3
    _expect_error(path, "animated")


def test_multipage_tiff(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "TIFF", save_all=True,
                                           append_images=[Image.new("RGB", (64, 64), "blue")])
    _expect_error(_write(tmp_path, "pages.tif", buf.getvalue()), "multi-page", "animated")


@pytest.mark.parametrize("side,fmt", [(1, "PNG"), (8, "JPEG"), (8, "PNG")])
def test_tiny_images(tmp_path, side, fmt):
    data = _encode(Image.new("RGB", (side, side), (200, 100, 150)), fmt)
    path = _write(tmp_path, f"tiny{side}.{fmt.lower()}", data)
    msg = _expect_error(path, "only", "at least")
    assert f"{side}x{side}" in msg and str(MIN_SIDE) in msg


def test_random_bytes(tmp_path):
    data = np.random.default_rng(1234).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    _expect_error(_write(tmp_path, "random.jpg", data), "not an image", "damaged")


def test_missing_file_is_an_image_error(tmp_path):
    _expect_error(tmp_path / "nope.jpg", "cannot read")


# --------------------------------------------------------------------------------------------
# Files that must be accepted and converted
# --------------------------------------------------------------------------------------------


def test_16bit_grayscale_tiff_scaled_from_full_range(tmp_path):
    a16 = np.zeros((64, 80), np.uint16)
    a16[:16] = 65535
    a16[16:32] = 32768
    a16[32:48] = 257  # 257 * 255 / 65535 = 1
    a16[48:] = 0
    path = _write(tmp_path, "deep.tif", _encode(Image.fromarray(a16), "TIFF"))
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    out = read_image(path)
    _check_rgb(out, (64, 80))
    assert (out[:16] == 255).all()
    assert set(np.unique(out[16:32])) <= {127, 128}
    assert (out[32:48] == 1).all()
    assert (out[48:] == 0).all()


def test_16bit_rgb_tiff_keeps_channel_order(tmp_path):
    r, g, b = 65535, 32768, 0
    bgr16 = np.empty((48, 48, 3), np.uint16)
    bgr16[...] = (b, g, r)
    ok, buf = cv2.imencode(".tiff", bgr16)
    assert ok
    out = read_image(_write(tmp_path, "deep_rgb.tif", buf.tobytes()))
    _check_rgb(out, (48, 48))
    assert tuple(out[0, 0]) in {(255, 127, 0), (255, 128, 0)}


def test_rgba_png_composited_on_white(tmp_path):
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (180, 40, 200)
    rgba[:32, :, 3] = 255  # opaque top half
    rgba[32:48, :, 3] = 0  # fully transparent
    rgba[48:, :, 3] = 128  # half transparent
    out = read_image(_write(tmp_path, "alpha.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    _check_rgb(out, (64, 64))
    assert (out[:32] == (180, 40, 200)).all()
    assert (out[32:48] == 255).all()
    half = out[50, 10].astype(int)
    expected = np.array((180, 40, 200)) * 128 / 255 + 255 * (1 - 128 / 255)
    assert np.abs(half - expected).max() <= 1


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (48, 48), 1)
    img.putpalette([0, 0, 0, 150, 50, 200] + [0] * 762)
    img.paste(0, (0, 0, 48, 24))  # top half: palette index 0, declared transparent
    out = read_image(_write(tmp_path, "pal_t.png", _encode(img, "PNG", transparency=0)))
    _check_rgb(out, (48, 48))
    assert (out[:24] == 255).all()
    assert (out[24:] == (150, 50, 200)).all()


def test_grayscale_png(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))  # 40 x 64
    out = read_image(_write(tmp_path, "gray.png", _encode(Image.fromarray(gray, "L"), "PNG")))
    _check_rgb(out, (40, 64))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_cmyk_jpeg_colour_survives(tmp_path):
    for rgb, dominant in (((220, 30, 30), 0), ((30, 30, 210), 2)):
        cmyk = Image.new("RGB", (64, 64), rgb).convert("CMYK")
        path = _write(tmp_path, f"cmyk{dominant}.jpg", _encode(cmyk, "JPEG", quality=95))
        with Image.open(path) as im:
            assert im.mode == "CMYK"
        out = read_image(path)
        _check_rgb(out, (64, 64))
        mean = out.reshape(-1, 3).mean(axis=0)
        assert int(np.argmax(mean)) == dominant, f"{rgb} came back as {mean}"
        assert np.abs(mean - np.array(rgb)).max() < 30


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _marked(h: int = 40, w: int = 80) -> np.ndarray:
    img = np.full((h, w, 3), 30, np.uint8)
    img[:8, :8] = (255, 0, 0)  # red marker in the stored top-left corner
    return img


def test_exif_rotated_jpeg(tmp_path):
    data = _encode(Image.fromarray(_marked()), "JPEG", quality=95, exif=_exif(6))
    out = read_image(_write(tmp_path, "rotated.jpg", data))
    _check_rgb(out, (80, 40))  # transposed
    # Orientation 6 = display rotated 90 degrees clockwise: stored top-left -> top-right.
    ys, xs = np.nonzero(out[..., 0] > 200)
    assert ys.max() < 10 and xs.min() > 40 - 10


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, orientation):
    from PIL import ImageOps

    data = _encode(Image.fromarray(_marked()), "JPEG", quality=95, exif=_exif(orientation))
    with Image.open(io.BytesIO(data)) as im:
        ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    out = decode_image(data)
    assert out.shape == ref.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2


def test_exif_rotated_png_with_alpha(tmp_path):
    rgba = np.dstack([_marked(), np.full((40, 80), 255, np.uint8)])
    data = _encode(Image.fromarray(rgba, "RGBA"), "PNG", exif=_exif(6))
    out = read_image(_write(tmp_path, "rotated_alpha.png", data))
    _check_rgb(out, (80, 40))
    ys, xs = np.nonzero(out[..., 0] > 200)
    assert ys.max() < 10 and xs.min() > 40 - 10


def test_normal_rgb_jpeg(tmp_path):
    rgb = _smear_like(224, 224, seed=3)
    out = read_image(_write(tmp_path, "smear.jpg", _encode(Image.fromarray(rgb), "JPEG", quality=95)))
    _check_rgb(out, (224, 224))
    # RGB order, not BGR: the mean colour is close to the source's.
    assert np.abs(out.reshape(-1, 3).mean(0) - rgb.reshape(-1, 3).mean(0)).max() < 3
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 8


def test_jpeg_with_bytes_after_end_marker(tmp_path):
    """Some cameras append data after the JPEG end marker; that is not truncation."""
    data = _encode(Image.fromarray(_smear_like()), "JPEG", quality=90) + b"SEFH" + bytes(64) + b"trailer"
    out = read_image(_write(tmp_path, "trailer.jpg", data))
    _check_rgb(out, (224, 224))


def test_palette_png(tmp_path):
    rgb = np.zeros((50, 70, 3), np.uint8)
    rgb[:, :35] = (200, 0, 120)
    rgb[:, 35:] = (20, 180, 60)
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    path = _write(tmp_path, "pal.png", _encode(pal, "PNG"))
    with Image.open(path) as im:
        assert im.mode == "P"
    out = read_image(path)
    _check_rgb(out, (50, 70))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt,tol", [("BMP", 0), ("WEBP", 12), ("TIFF", 0)])
def test_other_supported_formats(tmp_path, fmt, tol):
    rgb = _smear_like(64, 96, seed=5)
    out = read_image(_write(tmp_path, f"x.{fmt.lower()}", _encode(Image.fromarray(rgb), fmt)))
    _check_rgb(out, (64, 96))
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= tol
