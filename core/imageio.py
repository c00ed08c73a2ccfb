"""Decoding untrusted image files into 8-bit RGB arrays, safely.

Every entry point (dataset loading, the app, the prediction CLI) goes through
`decode_image`, so a bad file gets the same plain message everywhere.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import LeukoScopeError
from core.i18n import N_, Text

# A 224x224 smear is ~50k pixels; whole-slide crops up to ~40 MP are plausible.
# Anything bigger is refused from the header, before a single pixel is decoded.
MAX_PIXELS = 40_000_000
MAX_BYTES = 50 * 1024 * 1024
MIN_SIDE = 32
SUPPORTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "TIFF": "TIFF", "BMP": "BMP", "WEBP": "WebP"}
#: File-name suffixes of those formats: the one list the uploaders, the zip reader and the dataset
#: scanners use (a file with another suffix is skipped by name, before any byte is read).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

# We enforce our own pixel limit; Pillow's warning would only duplicate it.
Image.MAX_IMAGE_PIXELS = None


class ImageError(LeukoScopeError, ValueError):
    """A file that cannot be used as a smear image; the message (a `core.i18n.Text`) is shown to users as is."""


def too_large(size_bytes: int) -> Text:
    """The message for a file over `MAX_BYTES`."""
    return Text(N_("The file is {size} MB; the limit is {limit} MB."), size=f"{size_bytes / 2**20:.0f}",
                limit=str(MAX_BYTES // 2**20))


def _sniff(data: bytes) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        head = data[:5]
        if head.startswith(b"%PDF"):
            raise ImageError(Text(N_("This is a PDF document, not an image."))) from None
        raise ImageError(Text(N_("Not an image file (or an image format we cannot read)."))) from None
    except Exception as exc:  # Pillow raises various errors on corrupt headers
        raise ImageError(Text(N_("The image header is damaged ({error})."), error=type(exc).__name__)) from None
    return img


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode image bytes into an RGB array.

    Returns an (H, W, 3) uint8 array in RGB order, with EXIF orientation applied,
    alpha composited on white, grayscale/CMYK converted and 16-bit scaled to 8-bit.
    Raises `ImageError` with a plain-language message for anything unusable:
    empty, truncated, not an image, animated, too large in pixels or bytes, too small.
    """
    if not data:
        raise ImageError(Text(N_("The file is empty (0 bytes).")))
    if len(data) > MAX_BYTES:
        raise ImageError(too_large(len(data)))
    img = _sniff(data)
    fmt = img.format or "?"
    if getattr(img, "n_frames", 1) > 1:
        raise ImageError(Text(N_("Animated or multi-page image: export a single frame as JPEG, PNG or TIFF.")))
    if fmt not in SUPPORTED_FORMATS:
        names = ", ".join(SUPPORTED_FORMATS.values())
        raise ImageError(Text(N_("Unsupported image format {format}; use one of {formats}."), format=fmt, formats=names))
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(Text(N_("The image is {width}x{height} pixels ({megapixels} MP); the limit is {limit} MP."),
                              width=str(w), height=str(h), megapixels=f"{w * h / 1e6:.0f}",
                              limit=f"{max_pixels / 1e6:.0f}"))
    if min(w, h) < MIN_SIDE:
        raise ImageError(Text(N_("The image is only {width}x{height} pixels; a smear image needs at least {side}x{side}."),
                              width=str(w), height=str(h), side=str(MIN_SIDE)))
    if fmt == "JPEG" and not _jpeg_complete(data):
        raise ImageError(Text(N_("The JPEG file is truncated (incomplete download or copy).")))
    return _decode_pixels(data, img)


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan marker.

    Scan data cannot contain either marker (0xFF is byte-stuffed), so a cut file has no EOI
    after its last SOS, while bytes some cameras append after the EOI are tolerated.
    """
    sos = data.rfind(b"\xff\xda")
    return sos >= 0 and data.rfind(b"\xff\xd9") > sos


def _decode_pixels(data: bytes, img: Image.Image) -> np.ndarray:
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    # OpenCV's IMREAD_UNCHANGED keeps alpha but skips EXIF rotation, so images with alpha
    # go through Pillow (EXIF transpose, then composite on white).
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH
    buf = np.frombuffer(data, dtype=np.uint8)
    arr = None if has_alpha else cv2.imdecode(buf, flags)
    if arr is None:
        arr = _decode_with_pillow(img)
    else:
        arr = _to_uint8(arr)
        if arr.ndim == 2:
            arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
        elif arr.shape[2] == 4:
            arr = _composite_on_white(cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA))
        elif arr.shape[2] == 2:
            arr = _composite_on_white(cv2.cvtColor(arr[..., 0], cv2.COLOR_GRAY2RGB), arr[..., 1])
        else:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.shape[0] < MIN_SIDE or arr.shape[1] < MIN_SIDE:
        raise ImageError(Text(N_("The decoded image is too small to analyse.")))
    return np.ascontiguousarray(arr)


def _decode_with_pillow(img: Image.Image) -> np.ndarray:
    """Fallback for what OpenCV refuses (some palette PNGs, unusual TIFFs)."""
    from PIL import ImageOps

    try:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0, 0, 255).astype(np.uint8)
            return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
        if "A" in img.getbands() or img.mode == "P":
            rgba = np.asarray(img.convert("RGBA"))
            return _composite_on_white(rgba)
        return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise ImageError(Text(N_("The image data is damaged or truncated ({error})."), error=str(exc))) from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        # Full-range scaling keeps the stain's appearance; per-image max would not.
        return (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if np.nanmax(arr) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(arr) * scale, 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    if alpha is None:
        rgb, alpha = rgba[..., :3], rgba[..., 3]
    else:
        rgb = rgba
    a = alpha.astype(np.float32)[..., None] / 255.0
    return (rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).round().astype(np.uint8)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read and decode a file; see `decode_image`. Raises `ImageError` (also for I/O errors)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImageError(too_large(size))
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(Text(N_("Cannot read the file: {error}."), error=str(exc.strerror or exc))) from None
    return decode_image(data, max_pixels=max_pixels)


def as_rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    """Validate an in-memory image as a contiguous (H, W, 3) uint8 RGB array.

    Grayscale (H, W) is repeated to 3 channels and RGBA loses its alpha, so array-level
    APIs accept what `decode_image` may be bypassed with; anything else raises ValueError.
    """
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {np.shape(rgb)}")
    return np.ascontiguousarray(arr)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (size, size, 3) uint8, area-averaged when shrinking."""
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def to_model_input(images: list[np.ndarray] | np.ndarray, size: int) -> np.ndarray:
    """Stack RGB uint8 images into an (N, size, size, 3) float32 batch scaled to [0, 1]."""
    batch = np.stack([resize_square(im, size) for im in images]).astype(np.float32)
    return batch / 255.0
