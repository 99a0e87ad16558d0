"""Turn whatever the caller has into a BGR uint8 image, or raise :class:`ImageError`.

Accepted: a path (``str`` or ``pathlib.Path``), encoded bytes, a numpy array (BGR uint8;
grayscale, BGRA, float in [0, 1] and 16-bit are converted) or a PIL image. EXIF orientation
is honoured. Images with more than ``max_pixels`` pixels are refused before they are decoded
(decompression bombs); empty, truncated and non-image data are refused with the input named.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import ImageError

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp",
        ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm",
    }
)  # fmt: skip
"""File suffixes (lower case) that npcface treats as images when it lists a folder: the one
list used by bulk enrolment, training data, export crops and the benches."""

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
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (about 89M pixels) read the header first: too large either way.
        raise ImageError(f"{name}: image too large to decode safely ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from exc
    return _from_pil(img, name, max_pixels)


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
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
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
