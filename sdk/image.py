"""Turn whatever the caller has into a BGR uint8 image, or raise :class:`ImageError`.

Accepted: a path (``str`` or ``pathlib.Path``), encoded bytes, a numpy array (BGR uint8;
grayscale, BGRA, float in [0, 1] and 16-bit are converted) or a PIL image. EXIF orientation
is honoured. Images with more than ``max_pixels`` pixels are refused before they are decoded
(decompression bombs); this is the only pixel limit (Pillow's own is not applied, so a
larger ``max_pixels`` admits a 108 MP phone photo). Empty, truncated and non-image data are
refused with the input named; videos and animated images (GIF, WebP, APNG) with
:class:`~npcface.errors.NotStillImageError`, which names the format and points to
``npcface video``. HEIC/HEIF photos need the ``heif`` extra (pillow-heif); AVIF is
decoded by Pillow itself (11.2 and later).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import ImageError, NotStillImageError

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp",
        ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".heic", ".heif", ".hif", ".avif",
    }
)  # fmt: skip
"""File suffixes (lower case) that npcface treats as images: what :func:`load_image`
decodes (HEIC/HEIF with the ``heif`` extra): the one list used when a folder is listed (training
data, export crops, benches). Decoding never depends on the suffix, only on the content."""

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image accepted by default (8000 x 8000). Pass ``max_pixels`` to change it."""

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, Any]  # noqa: UP007


def describe(src: Any) -> str:
    """A short name for an input, for error messages."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    if isinstance(src, np.ndarray):
        return f"<array {src.dtype} {src.shape}>"
    return f"<{type(src).__name__}>"


def load_image(src: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load an image as a contiguous (H, W, 3) uint8 BGR array.

    Args:
        src: path, bytes, numpy array or PIL image.
        max_pixels: refuse larger images (checked from the header, before decoding).

    Raises:
        ImageError: the input cannot be read, is empty, truncated, too large, or of an
            unsupported dtype/shape. The message names the input.
    """
    name = describe(src)
    if isinstance(src, np.ndarray):
        return _from_array(src, name, max_pixels)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory, not an image") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot read: {exc.strerror or exc}") from exc
        return _decode(data, name, max_pixels)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode(bytes(src), name, max_pixels)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(src, Image.Image):
        return _from_pil(src, name, max_pixels)
    raise ImageError(
        f"{name}: unsupported image type; pass a path, bytes, a numpy array or a PIL image"
    )


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    from PIL import UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty file")
    brand = heif_brand(data)
    if brand is not None and brand[1] == "HEIC/HEIF":
        _enable_heif(name)
    video = None if brand is not None else video_format(data)
    if video is not None:
        raise NotStillImageError(f"{name}: {video}, not a still image; {_VIDEO_HINT}")
    try:
        img = _open_unguarded(data)
    except UnidentifiedImageError:
        if brand is not None:
            raise ImageError(
                f"{name}: {brand[1]} image (brand {brand[0]!r}) that this Pillow cannot decode"
            ) from None
        raise ImageError(f"{name}: not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from exc
    if getattr(img, "is_animated", False):
        frames = getattr(img, "n_frames", 2)
        raise NotStillImageError(
            f"{name}: animated {img.format} image ({frames} frames); only its first frame "
            f"would be read: {_VIDEO_HINT}"
        )
    fast = _jpeg_fast(data, img, name, max_pixels)
    return fast if fast is not None else _from_pil(img, name, max_pixels)


def _jpeg_fast(data: bytes, img: Any, name: str, max_pixels: int) -> np.ndarray | None:
    """A plain JPEG decoded by OpenCV (about 3x faster than Pillow plus the RGB -> BGR copy;
    the same libjpeg-turbo, and pixel-identical on the LFW and CelebA photos checked), or
    None when Pillow must do it: another format or colour mode, an EXIF orientation to
    apply, or data that does not end with the end-of-image marker (a truncated file, which
    OpenCV would fill with grey instead of refusing)."""
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return None
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    try:
        if img.getexif().get(0x0112, 1) != 1:
            return None
    except (OSError, ValueError, SyntaxError):
        return None
    _check_size(img.size[0], img.size[1], name, max_pixels)
    import cv2

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    out = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if out is None or out.shape[:2] != (img.size[1], img.size[0]):
        return None
    return out


_PIL_GUARD_LOCK = threading.Lock()


def _open_unguarded(data: bytes) -> Any:
    """``Image.open`` (header only) without Pillow's own pixel limit.

    Pillow refuses images above ``Image.MAX_IMAGE_PIXELS`` (about 89.5 M pixels) inside
    ``open``, before npcface can apply its own ``max_pixels``; so that one limit applies,
    ours, with its message, the guard is lifted while the header is read (a few
    microseconds, under a lock) and ``_check_size`` runs before any pixel is decoded.
    """
    from PIL import Image

    with _pillow_guard_lifted():
        return Image.open(io.BytesIO(data))


@contextlib.contextmanager
def _pillow_guard_lifted() -> Iterator[None]:
    from PIL import Image

    with _PIL_GUARD_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


_VIDEO_HINT = "for the faces in every frame use `npcface video` (npcface.video)"


def video_format(data: bytes) -> str | None:
    """The name of a video container the data starts with (MP4/QuickTime, Matroska/WebM,
    AVI, MPEG-TS, MPEG-PS, FLV, ASF/WMV, Ogg), or None. ISO-BMFF files of the HEIC/HEIF
    and AVIF image brands are not videos (see :func:`heif_brand`)."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return f"MP4/QuickTime video (brand {data[8:12].decode('latin-1')!r})"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM video"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI video"
    if len(data) > 376 and data[0] == data[188] == data[376] == 0x47:
        return "MPEG transport stream video"
    if data[:4] == b"\x00\x00\x01\xba":
        return "MPEG program stream video"
    if data[:3] == b"FLV":
        return "Flash video (FLV)"
    if data[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "ASF/WMV video"
    if data[:4] == b"OggS":
        return "Ogg media"
    return None


_HEIF_BRANDS = {
    **dict.fromkeys(("heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"), "HEIC/HEIF"),
    **dict.fromkeys(("avif", "avis"), "AVIF"),
}


def heif_brand(data: bytes) -> tuple[str, str] | None:
    """(brand, format) of an ISO-BMFF image (``ftyp`` box): HEIC/HEIF or AVIF; else None."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[0:4], "big")
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, min(size, len(data), 64), 4)]
    names = [b.decode("latin-1") for b in brands]
    for b in names:  # AVIF files also list mif1: the specific brand decides
        if _HEIF_BRANDS.get(b) == "AVIF":
            return b, "AVIF"
    for b in names:
        if b in _HEIF_BRANDS:
            return b, _HEIF_BRANDS[b]
    return None


_heif_ready = False


def _enable_heif(name: str) -> None:
    """Register pillow-heif's HEIC/HEIF opener with Pillow on first need (never at import).

    Raises:
        ImageError: pillow-heif is not installed; the message names the extra.
    """
    global _heif_ready
    if _heif_ready:
        return
    try:
        import pillow_heif
    except ImportError:
        raise ImageError(
            f"{name}: HEIC/HEIF image (as iPhones write); decoding it needs pillow-heif: "
            "pip install 'npcface[heif]'"
        ) from None
    pillow_heif.register_heif_opener()
    _heif_ready = True


def _check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (pass max_pixels to raise it)"
        )


def _from_pil(img: Any, name: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps

    _check_size(img.size[0], img.size[1], name, max_pixels)
    # Some decoders (GIF frames) repeat Pillow's pixel check while loading: an image that
    # passed ours but exceeds Pillow's is loaded with Pillow's guard lifted.
    limit = Image.MAX_IMAGE_PIXELS
    big = limit is not None and img.size[0] * img.size[1] > limit
    try:
        with _pillow_guard_lifted() if big else contextlib.nullcontext():
            img.load()
            img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:  # a frame larger than the header said
        raise ImageError(f"{name}: image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from exc
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        if mode == "I":
            arr = np.clip(arr, 0, 65535)
        return _from_array(arr.astype(np.uint16), name, max_pixels)
    if mode == "F":
        return _from_array(np.asarray(img, dtype=np.float32), name, max_pixels)
    rgb = np.asarray(img.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _from_array(arr: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(
            f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {arr.shape}"
        )
    _check_size(arr.shape[1], arr.shape[0], name, max_pixels)
    arr = _to_uint8(arr, name)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]  # BGRA -> BGR (alpha dropped)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageError(f"{name}: float image contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageError(
                f"{name}: float images must lie in [0, 1] (got [{lo:.3g}, {hi:.3g}]); "
                "pass uint8 for 0..255 data"
            )
        return np.round(arr * 255.0).astype(np.uint8)
    raise ImageError(
        f"{name}: unsupported dtype {arr.dtype}; use uint8 (BGR), uint16, or float in [0, 1]"
    )
