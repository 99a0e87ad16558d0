"""Videos and animated images given where one still image is needed: a typed error naming
the format and pointing to ``npcface video``, from the library and every still-image
command (verify, detect, enroll, identify)."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest
from video_clips import package_photo

from npcface import Gallery, load_image
from npcface.cli import main
from npcface.errors import ImageError, NotStillImageError
from npcface.image import video_format

av = pytest.importorskip("av")

# (suffix, codec): containers as PyAV's muxers write them
CONTAINERS = [
    ("mp4", "libx264", "MP4/QuickTime"),
    ("mov", "libx264", "MP4/QuickTime"),
    ("mkv", "libx264", "Matroska/WebM"),
    ("avi", "mpeg4", "AVI"),
    ("ts", "libx264", "MPEG transport stream"),
    ("flv", "flv", "Flash video"),
    ("mpg", "mpeg2video", "MPEG program stream"),
]


def _video(path, codec: str, frames: int = 6) -> None:
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=Fraction(25))
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), 20 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


@pytest.mark.parametrize(("suffix", "codec", "name"), CONTAINERS)
def test_videos_are_named_by_their_container(tmp_path, suffix, codec, name):
    path = tmp_path / f"clip.{suffix}"
    _video(path, codec)
    assert name in (video_format(path.read_bytes()) or "")
    with pytest.raises(NotStillImageError, match=f"{name}.*npcface video") as info:
        load_image(path)
    assert isinstance(info.value, ImageError) and info.value.code == "not_still_image"


def _animated_gif(face_second: bool = True) -> bytes:
    from PIL import Image

    face = load_image(package_photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"))
    rgb = Image.fromarray(face[:, :, ::-1].copy())
    blank = Image.new("RGB", rgb.size, (0, 0, 0))
    frames = [blank, rgb] if face_second else [rgb]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=len(frames) > 1, append_images=frames[1:], duration=100)
    return buf.getvalue()


def test_an_animated_gif_is_refused_naming_its_frames(tmp_path):
    """The issue's case: a blank first frame, the face in the second; npcface used to read
    frame 1 only and answer a bare 'no face found'."""
    path = tmp_path / "wave.gif"
    path.write_bytes(_animated_gif())
    with pytest.raises(NotStillImageError, match=r"animated GIF image \(2 frames\).*npcface video"):
        load_image(path)
    # a GIF of one frame is a still image and loads as before
    still = load_image(_animated_gif(face_second=False))
    assert still.ndim == 3 and still.shape[2] == 3


def test_animated_webp_and_png_are_refused():
    from PIL import Image

    a, b = Image.new("RGB", (32, 32), (0, 0, 0)), Image.new("RGB", (32, 32), (200, 10, 10))
    for fmt in ("WEBP", "PNG"):
        buf = io.BytesIO()
        a.save(buf, fmt, save_all=True, append_images=[b], duration=100)
        with pytest.raises(NotStillImageError, match=f"animated {fmt}"):
            load_image(buf.getvalue())


def test_still_image_commands_answer_with_the_format(tmp_path, capsys):
    clip = tmp_path / "door.mp4"
    _video(clip, "libx264")
    gif = tmp_path / "wave.gif"
    gif.write_bytes(_animated_gif())
    photo = str(package_photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"))
    g = tmp_path / "g"
    Gallery.create(str(g), dim=128, model="sface-int8").close()
    for argv in (
        ["verify", str(clip), photo, "--preset", "fast"],
        ["detect", str(gif)],
        ["identify", str(g), str(gif), "--preset", "fast"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "npcface video" in err, (argv, err)
        assert ("MP4/QuickTime video" in err) or ("animated GIF" in err), (argv, err)
    # bulk enrolment goes on past a bad file and writes why into its report
    listing = tmp_path / "people.csv"
    listing.write_text(f"{clip},alice\n{gif},bob\n")
    assert main(["enroll", str(g), str(listing), "--preset", "fast", "--no-progress"]) == 0
    report = (g / "enroll-report.csv").read_text()
    assert "MP4/QuickTime video" in report and "animated GIF" in report
    assert report.count("npcface video") == 2
