"""Every accepted input form, and every bad input with its typed error naming the input."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from npcface import ImageError, NpcfaceError, load_image


def _jpeg(arr_rgb, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr_rgb).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


RGB = np.zeros((8, 12, 3), np.uint8)
RGB[..., 0] = 200  # red in RGB


def test_path_bytes_and_pil_give_bgr(tmp_path):
    data = _png(RGB)
    p = tmp_path / "red.png"
    p.write_bytes(data)
    for src in (str(p), p, data, bytearray(data), memoryview(data), Image.open(p)):
        out = load_image(src)
        assert out.shape == (8, 12, 3) and out.dtype == np.uint8
        assert out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out[0, 0], [0, 0, 200])  # BGR


def test_array_conversions():
    gray = np.full((4, 5), 77, np.uint8)
    np.testing.assert_array_equal(load_image(gray)[1, 1], [77, 77, 77])
    np.testing.assert_array_equal(load_image(gray[:, :, None])[1, 1], [77, 77, 77])
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 9, 255
    np.testing.assert_array_equal(load_image(bgra)[0, 0], [9, 0, 0])
    f = np.full((4, 5, 3), 0.5, np.float32)
    assert load_image(f)[0, 0, 0] == 128
    u16 = np.full((4, 5, 3), 65535, np.uint16)
    assert load_image(u16)[0, 0, 0] == 255
    u16[0, 0, 0] = 256
    assert load_image(u16)[0, 0, 0] == 1


def test_exif_orientation_is_honoured():
    arr = np.zeros((10, 30, 3), np.uint8)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = load_image(_jpeg(arr, exif=exif))
    assert out.shape[:2] == (30, 10)


def test_sixteen_bit_png(tmp_path):
    arr = np.full((6, 7), 40000, np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    out = load_image(p)
    assert out.shape == (6, 7, 3) and out[0, 0, 0] == 40000 >> 8


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda d: d / "missing.jpg", "no such file"),
        (lambda d: d, "directory"),
        (lambda d: _write(d / "empty.jpg", b""), "empty file"),
        (lambda d: _write(d / "text.jpg", b"hello, not an image"), "not an image"),
        (
            lambda d: _write(d / "cut.jpg", _jpeg(np.full((64, 64, 3), 99, np.uint8))[:300]),
            "truncated",
        ),
    ],
)
def test_bad_files_raise_image_error_naming_the_input(tmp_path, make, fragment):
    src = make(tmp_path)
    with pytest.raises(ImageError) as info:
        load_image(src)
    assert fragment in str(info.value).lower() or fragment in str(info.value)
    assert str(src) in str(info.value)
    assert isinstance(info.value, NpcfaceError)


def _write(path, data):
    path.write_bytes(data)
    return path


def _png_header_only(width, height):
    """A PNG that claims a huge size: a decompression bomb's header."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


def test_huge_images_are_refused_before_decoding():
    with pytest.raises(ImageError, match="too large|exceeds"):
        load_image(_png_header_only(60000, 60000))
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(_png(np.zeros((100, 100, 3), np.uint8)), max_pixels=9_999)
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(np.zeros((100, 100, 3), np.uint8), max_pixels=9_999)


@pytest.mark.parametrize(
    "arr,fragment",
    [
        (np.zeros((4, 4, 3), np.int64), "dtype"),
        (np.zeros((4, 4, 3), bool), "dtype"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (np.full((4, 4, 3), 2.0, np.float32), "[0, 1]"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_arrays(arr, fragment):
    with pytest.raises(ImageError) as info:
        load_image(arr)
    assert fragment in str(info.value)


def test_unsupported_type():
    with pytest.raises(ImageError, match="unsupported image type"):
        load_image(12345)


def test_plain_jpegs_decode_through_opencv_pixel_identical_to_pillow(lfw_dir):
    """The OpenCV fast path must give exactly what Pillow gives (RGB -> BGR), on real photos
    and on a grey one; orientation-tagged JPEGs are left to Pillow."""
    import io

    from PIL import Image

    from npcface.image import _jpeg_fast

    photos = sorted((lfw_dir / "images").glob("B*/*_0001.jpg"))[:20]
    datas = [p.read_bytes() for p in photos]
    grey = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 30), np.uint8)).save(
        grey, "JPEG"
    )
    datas.append(grey.getvalue())
    for data in datas:
        pil = Image.open(io.BytesIO(data))
        fast = _jpeg_fast(data, pil, "x", 10**9)
        assert fast is not None  # the fast path was taken
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]
        assert fast.dtype == np.uint8 and np.array_equal(fast, want)
        assert np.array_equal(load_image(data), want)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = _jpeg(np.zeros((8, 16, 3), np.uint8), exif=exif)
    assert _jpeg_fast(rotated, Image.open(io.BytesIO(rotated)), "x", 10**9) is None
    cut = datas[0][:-2000]
    assert _jpeg_fast(cut, Image.open(io.BytesIO(cut)), "x", 10**9) is None
