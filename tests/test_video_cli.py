"""``npcface video``: events as JSON lines, the annotated video, the summary, --find's time
ranges, on the composed clip (real decoder, tracker, recogniser and gallery)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("supervision")

from video_clips import make_clip, make_gallery, other_pictures, photos  # noqa: E402

from npcface import FaceRecognizer  # noqa: E402
from npcface.cli import main  # noqa: E402
from npcface.draw import save_image  # noqa: E402
from npcface.eval.videoset import Actor, Scene  # noqa: E402
from npcface.video import open_source  # noqa: E402


@pytest.fixture(scope="module")
def fast():
    return FaceRecognizer(preset="fast")


@pytest.fixture(scope="module")
def material(fast, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    clip = make_clip(fast, folder)
    make_gallery(fast, folder / "people").close()
    probe = folder / "astronaut_probe.png"
    save_image(probe, other_pictures(photos()["astronaut"])[0])
    return folder, clip, probe


def _truth_span(clip, identity):
    frames = [t.frame for t in clip.truth if t.identity == identity]
    return min(frames) / clip.fps, max(frames) / clip.fps


def test_video_command_events_draw_and_summary(material, tmp_path, capsys):
    folder, clip, _ = material
    events_path, drawn = tmp_path / "events.jsonl", tmp_path / "drawn.mp4"
    argv = ["video", str(clip.path), "--gallery", str(folder / "people"), "--preset", "fast"]
    argv += ["--out", str(events_path), "--crops", "--draw", str(drawn), "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == clip.frames and summary["dropped"] == 0
    assert summary["tracks"] >= 2 and summary["identified"] == summary["tracks"]
    assert summary["speed"] > 0
    # each person's time ranges cover their ground truth (within a frame or two)
    for name in ("astronaut", "hopper"):
        lo, hi = _truth_span(clip, name)
        ranges = summary["identities"][name]
        assert ranges[0]["start"] == pytest.approx(lo, abs=0.25)
        assert ranges[-1]["end"] == pytest.approx(hi, abs=0.25)
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("started") == kinds.count("ended") == summary["tracks"]
    ended = [e for e in events if e["event"] == "ended"]
    assert all(len(e["best_crop_jpeg"]) > 1000 for e in ended)
    # the annotated video: every frame, same size, and the boxes drawn change the pixels
    with open_source(drawn) as a, open_source(clip.path) as b:
        fa, fb = list(a), list(b)
    assert len(fa) == len(fb) == clip.frames and a.size == b.size
    i = clip.truth[len(clip.truth) // 2].frame
    assert np.abs(fa[i].image.astype(int) - fb[i].image).mean() > 1.0


def test_find_lists_the_time_ranges_of_a_person(material, capsys):
    folder, clip, probe = material
    assert main(["video", str(clip.path), "--find", str(probe), "--preset", "fast", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)["found"][str(probe)]
    lo, hi = _truth_span(clip, "astronaut")
    assert found and found[0]["start"] == pytest.approx(lo, abs=0.25)
    assert found[-1]["end"] == pytest.approx(hi, abs=0.25)
    # Grace Hopper's range (later and longer) is not hers
    assert found[-1]["end"] < _truth_span(clip, "hopper")[1] - 0.2


def test_find_answers_1_when_the_person_is_absent(fast, material, tmp_path, capsys):
    _, _, probe = material
    hopper = photos()["hopper"]
    box = tuple(float(v) for v in fast.detect(hopper)[0].box)
    only = Scene([Actor("hopper", (hopper,), (box,), 0.0, 1.2, (0.3, 0.5), (0.6, 0.5), (0.4, 0.4))],
                 320, 240, 25, 1.2)  # fmt: skip
    path = tmp_path / "hopper.mp4"
    only.write(path)
    assert main(["video", str(path), "--find", str(probe), "--preset", "fast"]) == 1
    assert f"{probe}: not found" in capsys.readouterr().out


def test_video_command_errors(tmp_path, capsys):
    assert main(["video", str(tmp_path / "none.mp4"), "--preset", "fast"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["video", "x.mp4", "--crops"]) == 2
    assert "--crops needs --out" in capsys.readouterr().err
