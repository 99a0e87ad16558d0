"""npcface.video on real material: an H.264 clip composed from package photos decoded by
PyAV, the same clip pushed over RTSP by ffmpeg, an endless HTTP stream served by ffmpeg and
stopped, ByteTrack (supervision), the real recogniser and a real gallery."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("supervision")

from video_clips import (  # noqa: E402
    free_port,
    http_endless,
    make_clip,
    make_gallery,
    open_when_up,
    rtsp_push,
    rtsp_served,
)

from npcface import FaceRecognizer  # noqa: E402
from npcface.errors import InvalidArgumentError, VideoError  # noqa: E402
from npcface.results import Face  # noqa: E402
from npcface.video import (  # noqa: E402
    FaceTracker,
    TrackEnded,
    TrackFaces,
    TrackIdentified,
    TrackStarted,
    VideoAnalyzer,
    open_source,
    weighted_template,
)
from npcface.video.template import WEIGHT_FLOOR, FaceSample  # noqa: E402


@pytest.fixture(scope="module")
def fast():
    return FaceRecognizer(preset="fast")


@pytest.fixture(scope="module")
def clip(fast, tmp_path_factory):
    return make_clip(fast, tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def gallery(fast, tmp_path_factory):
    g = make_gallery(fast, tmp_path_factory.mktemp("g") / "people")
    yield g
    g.close()


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x2 - x1, 0) * max(y2 - y1, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _run(analyzer, source):
    results = list(analyzer.run(source))
    events = [e for r in results for e in r.events]
    return results, events


def _truth_of_tracks(results, truth, offset=0):
    """track id -> the identity of the ground-truth face it overlaps most often."""
    by_frame = collections.defaultdict(list)
    for t in truth:
        by_frame[t.frame].append(t)
    votes = collections.defaultdict(collections.Counter)
    for r in results:
        if r.frame is None:
            continue
        for f in r.faces:
            for t in by_frame[r.frame.index + offset]:
                if _iou(f.face.box, t.box) >= 0.5:
                    votes[f.track_id][t.identity] += 1
    return {tid: c.most_common(1)[0][0] for tid, c in votes.items()}


def _check_event_order(events):
    """started < identified < ended for every track, and every track that started ends."""
    seen: dict[int, list[str]] = collections.defaultdict(list)
    for e in events:
        seen[e.track_id].append(e.kind)
    for tid, kinds in seen.items():
        assert kinds[0] == "started", (tid, kinds)
        assert kinds[-1] == "ended", (tid, kinds)
        assert kinds.count("started") == 1 and kinds.count("ended") == 1, (tid, kinds)


# ---------------------------------------------------------------------- the file
def test_file_frames_carry_their_timestamps(clip):
    with open_source(clip.path) as src:
        assert not src.live and src.fps == pytest.approx(clip.fps)
        assert src.size == (320, 240)
        frames = list(src)
    assert len(frames) == clip.frames
    assert [f.index for f in frames] == list(range(clip.frames))
    times = np.array([f.time for f in frames])
    np.testing.assert_allclose(times, np.arange(clip.frames) / clip.fps, atol=1e-6)
    assert frames[0].image.shape == (240, 320, 3) and frames[0].image.dtype == np.uint8
    # the decoded pixels are the composed ones (H.264 at crf 20: small error)
    rendered, _ = clip.scene.render(40)
    assert np.abs(frames[40].image.astype(int) - rendered).mean() < 4


def test_file_tracks_identities_and_events(fast, clip, gallery):
    analyzer = VideoAnalyzer(fast, gallery)
    with open_source(clip.path) as src:
        results, events = _run(analyzer, src)
    _check_event_order(events)
    ended = [e for e in events if isinstance(e, TrackEnded)]
    truth_of = _truth_of_tracks(results, clip.truth)
    # each person is followed, and each track's identity is the person's
    assert {e.identity for e in ended} == {"astronaut", "hopper"}
    for e in ended:
        assert e.identity == truth_of[e.track_id], e
        assert e.best_crop is not None and e.best_crop.shape == (112, 112, 3)
        assert e.template is not None and abs(np.linalg.norm(e.template) - 1) < 1e-5
        assert 0 < e.start <= e.end <= clip.frames / clip.fps
    ident = [e for e in events if isinstance(e, TrackIdentified)]
    assert ident and all(e.similarity >= e.threshold for e in ident)
    assert all(e.threshold == pytest.approx(fast.default_threshold()) for e in ident)
    # the event's FAR is the smallest calibrated FAR whose threshold it reaches
    for e in ident:
        fars = {float(k[4:]): v for k, v in fast.info.thresholds.items() if k.startswith("far=")}
        assert e.far == min(f for f, t in fars.items() if e.similarity >= t)
    # a person's first track starts near their entrance in the clip
    first = {}
    for e in events:
        if isinstance(e, TrackStarted) and truth_of.get(e.track_id) not in first:
            first[truth_of.get(e.track_id)] = e.time
    assert first["astronaut"] == pytest.approx(0.2, abs=0.25)
    assert first["hopper"] == pytest.approx(0.6, abs=0.25)
    s = analyzer.summary()
    assert s.frames == clip.frames and s.detected_frames == clip.frames and s.dropped == 0
    assert s.tracks == len(ended) and s.identified == len(ended)
    assert s.video_seconds == pytest.approx(clip.frames / clip.fps)


def test_detection_every_third_frame_carries_faces_between(fast, clip):
    analyzer = VideoAnalyzer(fast, every=3)
    with open_source(clip.path) as src:
        results, events = _run(analyzer, src)
    detected = [r for r in results if r.frame is not None and r.detected]
    assert len(detected) == -(-clip.frames // 3)
    carried = [r for r in results if r.frame is not None and not r.detected and r.faces]
    assert carried and all(not f.detected for r in carried for f in r.faces)
    _check_event_order(events)
    assert analyzer.summary().identified == 0  # no gallery: tracks only


def test_better_faces_reidentify_a_track(fast, clip, gallery):
    """A track keeps its best faces; a better face changes the template and identity is
    decided again: with keep=1 and a wide margin the template never changes after the
    first face, with keep=5 it does (the identity of the template is searched again)."""
    searches = []

    class Counting:
        def __init__(self, g):
            self.g = g

        def check_model(self, *a):
            return self.g.check_model(*a)

        def search(self, q, k=5):
            searches.append(len(q))
            return self.g.search(q, k)

    def run(**kw):
        searches.clear()
        analyzer = VideoAnalyzer(fast, Counting(gallery), **kw)
        with open_source(clip.path) as src:
            list(analyzer.run(src))
        return sum(searches), analyzer.summary().tracks

    once, tracks = run(keep=1, margin=2.0)
    more, _ = run(keep=5)
    assert once == tracks == 2  # one search per track
    assert more > once


# ---------------------------------------------------------------------- found again
@pytest.fixture(scope="module")
def away_and_back(fast, tmp_path_factory):
    """The astronaut walks in and out (0.2-1.2 s), is away for 1.4 s (longer than the
    tracker's and the analyzer's 1 s), and comes back (2.6-3.6 s) in another picture
    (mirrored, turned and shrunk): an H.264 clip and its two appearances."""
    from video_clips import other_pictures, photos

    from npcface.eval.videoset import Actor, Scene

    img = photos()["astronaut"]
    turned = other_pictures(img)[0]
    box = [tuple(float(v) for v in fast.detect(i)[0].box) for i in (img, turned)]
    actors = [
        Actor("astronaut", (img,), (box[0],), 0.2, 1.2, (0.3, 0.45), (0.6, 0.5), (0.4, 0.4)),
        Actor("astronaut", (turned,), (box[1],), 2.6, 3.6, (0.7, 0.5), (0.4, 0.45), (0.4, 0.4)),
    ]
    path = tmp_path_factory.mktemp("back") / "back.mp4"
    Scene(actors, 320, 240, 25.0, 3.6, seed=4).write(path)
    return path, img, turned


def _appearances(analyzer, path):
    with open_source(path) as src:
        _, events = _run(analyzer, src)
    return [(e.kind, e.track_id, getattr(e, "resumed", None)) for e in events]


def test_a_person_found_again_resumes_their_track(fast, away_and_back):
    """Found again within ``relink_after`` and matching the track's template at the
    threshold for ``relink_far``: the same track id, a ``started`` event that says
    ``resumed``; without relinking a second track."""
    path = away_and_back[0]
    got = _appearances(VideoAnalyzer(fast), path)
    tid = got[0][1]
    assert got == [
        ("started", tid, False),
        ("ended", tid, None),
        ("started", tid, True),
        ("ended", tid, None),
    ]
    plain = _appearances(VideoAnalyzer(fast, relink_far=None), path)
    assert [k for k, _, _ in plain] == ["started", "ended", "started", "ended"]
    assert plain[0][1] != plain[2][1]
    short = _appearances(VideoAnalyzer(fast, relink_after=0.5), path)  # away too long
    assert short[0][1] != short[2][1]


def test_the_gallery_relinks_a_face_its_track_template_does_not_match(fast, away_and_back, gallery):
    """With a template threshold the turned picture does not reach, the gallery, which
    identifies it as the track's identity, resumes the track; with no gallery the same
    analyzer starts a new track."""
    path, img, turned = away_and_back
    sim = float(fast.embed(img) @ fast.embed(turned))

    def analyzer(g):
        a = VideoAnalyzer(fast, g)
        a.relink_threshold = (sim + 1) / 2  # above the two pictures' similarity
        return a

    got = _appearances(analyzer(gallery), path)
    starts = [(tid, resumed) for kind, tid, resumed in got if kind == "started"]
    assert len(starts) == 2 and starts[0][0] == starts[1][0] and starts[1][1] is True
    alone = _appearances(analyzer(None), path)
    starts = [(tid, resumed) for kind, tid, resumed in alone if kind == "started"]
    assert len(starts) == 2 and starts[0][0] != starts[1][0] and starts[1][1] is False


def test_a_face_that_takes_over_a_track_leaves_it(fast, gallery, tmp_path):
    """Hopper appears where the astronaut stood the frame the astronaut leaves (same place,
    same size): ByteTrack keeps the astronaut's track on her face (its boxes overlap). The
    analyzer's appearance check (every 10th detection) takes her face out of that track
    within 10 frames into a track of her own, identified as hopper; with the check off,
    one track holds both people."""
    from video_clips import photos

    from npcface.eval.videoset import Actor, Scene

    imgs = photos()
    box = {k: tuple(float(v) for v in fast.detect(i)[0].box) for k, i in imgs.items()}
    still = ((0.5, 0.5), (0.5, 0.5), (0.45, 0.45))
    actors = [
        Actor("astronaut", (imgs["astronaut"],), (box["astronaut"],), 0.0, 1.6, *still),
        Actor("hopper", (imgs["hopper"],), (box["hopper"],), 1.6, 3.6, *still),
    ]
    path = tmp_path / "swap.mp4"
    truth = Scene(actors, 320, 240, 25.0, 3.6, seed=5).write(path)
    first_hopper = min(t.frame for t in truth if t.identity == "hopper")

    def run(check: bool):
        analyzer = VideoAnalyzer(fast, gallery)
        if not check:
            analyzer.split_below = None
        with open_source(path) as src:
            results, events = _run(analyzer, src)
        return analyzer, results, [e for e in events if isinstance(e, TrackEnded)]

    unchecked, results, ended = run(False)
    assert len(ended) == 1 and unchecked.splits == 0  # the tracker alone: one track
    astronaut_track = ended[0].track_id
    assert any(f.track_id == astronaut_track for r in results[first_hopper + 5 :] for f in r.faces)

    checked, results, ended = run(True)
    assert checked.splits >= 1
    assert {e.identity for e in ended} == {"astronaut", "hopper"}
    (first,) = [e for e in ended if e.identity == "astronaut"]
    hers = {e.track_id for e in ended if e.identity == "hopper"}
    late = [f.track_id for r in results[first_hopper + 10 :] if r.frame for f in r.faces]
    assert late and set(late) <= hers and first.track_id not in late


def test_a_face_whose_box_jumps_is_checked_at_once(fast, gallery, tmp_path):
    """Hopper appears the frame the astronaut leaves, a little aside (her box overlaps
    the astronaut's last box at IoU < 0.6, so ByteTrack still hands her the astronaut's
    track): the jump is checked in that frame and her face never shows under the
    astronaut's track; with the jump check off it does until the next periodic check."""
    from video_clips import photos

    from npcface.eval.videoset import Actor, Scene

    imgs = photos()
    box = {k: tuple(float(v) for v in fast.detect(i)[0].box) for k, i in imgs.items()}
    here, aside = (0.45, 0.5), (0.54, 0.545)
    actors = [
        Actor("astronaut", (imgs["astronaut"],), (box["astronaut"],), 0.0, 1.6, here, here,
              (0.45, 0.45)),
        Actor("hopper", (imgs["hopper"],), (box["hopper"],), 1.6, 3.6, aside, aside,
              (0.45, 0.45)),
    ]  # fmt: skip
    path = tmp_path / "jump.mp4"
    truth = Scene(actors, 320, 240, 25.0, 3.6, seed=5).write(path)
    hers = {t.frame: t.box for t in truth if t.identity == "hopper"}

    def tracks_on_her(jump_iou: float) -> tuple[set[int], set[int]]:
        analyzer = VideoAnalyzer(fast, gallery, jump_iou=jump_iou)
        with open_source(path) as src:
            results, _ = _run(analyzer, src)
        on_her, before = set(), set()
        for r in results:
            for f in r.faces if r.frame is not None else ():
                if r.frame.index not in hers:
                    before.add(f.track_id)
                elif _iou(f.face.box, hers[r.frame.index]) >= 0.5:
                    on_her.add(f.track_id)
        return before, on_her

    before, on_her = tracks_on_her(0.6)
    assert len(before) == 1 and on_her and not on_her & before
    before, on_her = tracks_on_her(0.0)  # never a jump
    assert on_her & before


def test_a_crowded_face_enters_no_template(fast, gallery, tmp_path):
    """The astronaut stands still, blurred until 1.2 s and sharp from then on; Grace
    Hopper walks past in front of her from 0.8 to 2.6 s. Her sharp faces while Hopper is
    near (partly covered: no evidence of who she is) stay out of her track's template;
    those after Hopper has passed enter it. With crowding off (``crowd_margin`` < 0) the
    sharp, covered faces enter it."""
    import cv2
    from video_clips import photos

    from npcface.eval.videoset import Actor, Scene
    from npcface.video.analyze import _crowded

    imgs = photos()
    sharp = imgs["astronaut"]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 7)
    box = {k: tuple(float(v) for v in fast.detect(i)[0].box) for k, i in imgs.items()}
    blurred_box = tuple(float(v) for v in fast.detect(blurred)[0].box)
    still = ((0.5, 0.45), (0.5, 0.45), (0.4, 0.4))
    actors = [
        Actor("astronaut", (blurred, sharp, sharp), (blurred_box, box["astronaut"],
              box["astronaut"]), 0.0, 3.6, *still, 1.2),
        Actor("hopper", (imgs["hopper"],), (box["hopper"],), 0.8, 2.6, (0.95, 0.8),
              (0.05, 0.8), (0.4, 0.4)),
    ]  # fmt: skip
    path = tmp_path / "crowd.mp4"
    Scene(actors, 320, 240, 25.0, 3.6, seed=5).write(path)

    def samples(margin: float) -> tuple[set[int], set[int], str | None]:
        """Frames of the astronaut track's kept faces, frames where she was crowded, and
        the track's identity."""
        analyzer = VideoAnalyzer(fast, gallery, crowd_margin=margin)
        crowded, ended = set(), []
        with open_source(path) as src:
            for r in analyzer.run(src):
                ended += [e for e in r.events if isinstance(e, TrackEnded)]
                if r.frame is not None and len(r.faces) == 2:
                    crowded.add(r.frame.index) if _crowded([f.face for f in r.faces], 0.25) else 0
        (first,) = [e for e in ended if e.start == 0.0]
        track = analyzer._ended[first.track_id]
        return {s.frame for s in track.faces.samples}, crowded, first.identity

    kept, crowded, identity = samples(0.25)
    assert crowded and kept and not kept & crowded
    assert identity == "astronaut"
    kept, crowded, _ = samples(-1.0)
    assert kept & crowded


def test_a_track_of_crowded_faces_is_found_again(fast, gallery, tmp_path):
    """The astronaut walks alone, leaves, and comes back in front of Grace Hopper, whose
    face is near hers (crowded, mostly covered), then hidden behind her for over a second,
    then walks away alone. Hopper's track has only crowded faces (no template) when it
    ends: the template of those faces resumes it when she is found again, so the clip has
    two tracks; without it (a track of crowded faces cannot be resumed) three."""
    from video_clips import photos

    from npcface.eval.videoset import Actor, Scene

    imgs = photos()
    box = {k: tuple(float(v) for v in fast.detect(i)[0].box) for k, i in imgs.items()}

    def astronaut(t0, t1, p0, p1):
        return Actor("astronaut", (imgs["astronaut"],), (box["astronaut"],), t0, t1, p0, p1,
                     (0.35, 0.35))  # fmt: skip

    actors = [
        astronaut(0.0, 1.0, (0.2, 0.5), (0.3, 0.5)),
        Actor("hopper", (imgs["hopper"],), (box["hopper"],), 1.4, 4.0, (0.85, 0.446),
              (0.1, 0.5), (0.35, 0.35)),
        astronaut(1.4, 4.0, (0.67, 0.5), (0.65, 0.5)),
    ]  # fmt: skip
    path = tmp_path / "crowded.mp4"
    truth = Scene(actors, 320, 240, 25.0, 4.0, seed=5).write(path)
    hers = {t.frame: t.box for t in truth if t.identity == "hopper"}
    analyzer = VideoAnalyzer(fast, gallery)
    with open_source(path) as src:
        results, _ = _run(analyzer, src)
    tracks = {f.track_id for r in results for f in r.faces}
    on_her = {
        f.track_id
        for r in results
        if r.frame is not None and r.frame.index in hers
        for f in r.faces
        if _iou(f.face.box, hers[r.frame.index]) >= 0.5
    }
    assert len(tracks) == 2 and len(on_her) == 1  # the astronaut's, and Hopper's


# ---------------------------------------------------------------------- live sources
def test_rtsp_stream_from_ffmpeg(fast, clip, gallery):
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    with rtsp_push(clip.path, url, realtime=False):
        src = open_source(url, options={"rtsp_flags": "listen"}, timeout=20, buffer=1000)
        with src:
            assert src.live
            analyzer = VideoAnalyzer(fast, gallery)
            results, events = _run(analyzer, src)
    frames = [r.frame for r in results if r.frame is not None]
    assert len(frames) >= clip.frames - 2  # RTSP may lose the first frame before a keyframe
    times = np.array([f.time for f in frames])
    assert np.all(np.diff(times) > 0)
    _check_event_order(events)
    ended = [e for e in events if isinstance(e, TrackEnded)]
    assert {e.identity for e in ended} == {"astronaut", "hopper"}
    offset = clip.frames - len(frames)  # frames lost at the start shift the indices
    truth_of = _truth_of_tracks(results, clip.truth, offset)
    assert all(e.identity == truth_of[e.track_id] for e in ended)


def test_rtsp_stream_pulled_from_a_server(fast, clip, gallery):
    """The clip served over RTSP on a loopback port (ffmpeg publishing to Debian's RTSP
    relay) and pulled by npcface.video as a camera's rtsp:// URL: frames at the clip's
    size with rising timestamps, both people tracked and identified, each track's
    identity the person it follows (the streamed frames matched to the clip's by their
    pixels, since the reader joins the looped stream anywhere)."""
    import cv2

    with open_source(clip.path) as src:
        thumbs = np.stack([cv2.resize(f.image, (40, 30)).astype(np.int16) for f in src])
    with rtsp_served(clip.path) as url:
        src = open_when_up(url, 20, options={"rtsp_transport": "udp"})
        with src:
            assert src.live and src.size == (320, 240)
            analyzer = VideoAnalyzer(fast, gallery)
            results, stop = [], threading.Event()
            for r in analyzer.run(src, stop):  # stopped: the open tracks end
                results.append(r)
                if len(results) >= clip.frames * 1.5:  # a loop and a half
                    stop.set()
    frames = [r.frame for r in results if r.frame is not None]
    assert np.all(np.diff([f.time for f in frames]) > 0)
    events = [e for r in results for e in r.events]
    ended = [e for e in events if isinstance(e, TrackEnded)]
    assert {e.identity for e in ended} >= {"astronaut", "hopper"}
    by_frame = collections.defaultdict(list)
    for t in clip.truth:
        by_frame[t.frame].append(t)
    votes = collections.defaultdict(collections.Counter)
    for r in results:
        if r.frame is None or not r.faces:
            continue
        thumb = cv2.resize(r.frame.image, (40, 30)).astype(np.int16)
        index = int(np.argmin(np.abs(thumbs - thumb).mean(axis=(1, 2, 3))))
        for f in r.faces:
            for t in by_frame[index]:
                if _iou(f.face.box, t.box) >= 0.5:
                    votes[f.track_id][t.identity] += 1
    for e in ended:
        if e.identity is not None and votes[e.track_id]:
            assert e.identity == votes[e.track_id].most_common(1)[0][0], e
    assert sum(1 for e in ended if votes[e.track_id]) >= 2


def test_endless_stream_is_stopped(fast, clip, gallery):
    """A camera-like stream that never ends: the monitor sees people come and go again and
    again (the clip loops), and stops when asked, ending its open tracks."""
    with http_endless(clip.path, free_port()) as url:
        src = open_when_up(url)
        analyzer = VideoAnalyzer(fast, gallery)
        stop = threading.Event()
        got: list = []

        def consume():
            for r in analyzer.run(src, stop):
                got.append(r)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # past the first loop of the clip
            ids = [e for r in got for e in r.events if isinstance(e, TrackIdentified)]
            if len({e.track_id for e in ids}) >= 3 and got[-1].frame.time > 4.5:
                break
            time.sleep(0.2)
        t0 = time.monotonic()
        src.close()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - t0 < 5
    assert got[-1].frame is None  # the last result ends the open tracks
    events = [e for r in got for e in r.events]
    _check_event_order(events)
    ended = [e for e in events if isinstance(e, TrackEnded)]
    assert {e.identity for e in ended} == {"astronaut", "hopper"}
    assert max(e.end for e in ended) > 4.5  # the clip (3.6 s) looped: the stream goes on


def test_a_slow_consumer_drops_frames_never_queues_them(clip):
    """A live source (the file played at its own speed) read by a consumer that takes
    0.1 s per frame (25 fps arrive): the buffer holds at most 2 frames, the oldest are
    dropped and counted, and the frames delivered are the newest."""
    with open_source(clip.path, live=True, buffer=2) as src:
        got = []
        for frame in src:
            got.append(frame.index)
            time.sleep(0.1)
        dropped = src.dropped
    assert dropped > clip.frames // 2
    assert len(got) + dropped == clip.frames  # every frame either delivered or counted
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got[-1] == clip.frames - 1  # the newest frame is never the one dropped


def test_a_fast_consumer_of_a_live_source_drops_nothing(clip):
    with open_source(clip.path, live=True, buffer=2) as src:
        got = [f.index for f in src]
        assert src.dropped == 0
    assert got == list(range(clip.frames))


# ---------------------------------------------------------------------- parts
def test_tracker_keeps_ids_on_moving_boxes():
    """ByteTrack on two faces moving 4 px a frame, crossing paths vertically apart: ids
    stay with their faces; a face that vanishes for longer than lost_after gets a new id."""
    tracker = FaceTracker(fps=25, lost_after=0.4)

    def face(x, y):
        box = np.array([x, y, x + 60, y + 70], np.float32)
        return Face(box, np.zeros((5, 2), np.float32), 0.95)

    ids = []
    for i in range(20):
        out = tracker.update([face(10 + 4 * i, 10), face(200 - 4 * i, 120)])
        ids.append([t for t, _ in out])
    a, b = ids[0]  # the tracker's first frame confirms its tracks at once
    assert a != b and all(x == [a, b] for x in ids)
    for _ in range(15):  # 0.6 s without faces
        tracker.update([])
    assert tracker.update([face(90, 10)]) == []  # later, a track is confirmed by its 2nd frame
    out = tracker.update([face(94, 10)])
    assert out and out[0][0] not in (a, b)


def test_weighted_template_is_the_quality_weighted_mean():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(3, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    q = np.array([0.9, 0.5, 0.0])
    w = np.array([0.9, 0.5, WEIGHT_FLOOR])
    expected = (w[:, None] * e).sum(0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(weighted_template(e, q), expected, atol=1e-6)


def test_track_faces_keep_the_best_and_need_a_margin():
    tf = TrackFaces(keep=2, margin=0.1)
    crop = np.zeros((4, 4, 3), np.uint8)

    def s(q, i):
        v = np.zeros(4, np.float32)
        v[i] = 1
        return FaceSample(q, 0.0, 0, crop, v)

    assert tf.add(s(0.5, 0)) and tf.add(s(0.3, 1))
    assert not tf.wants(0.35) and not tf.add(s(0.35, 2))  # not better by the margin
    assert tf.add(s(0.9, 2))
    assert [x.quality for x in tf.samples] == [0.9, 0.5]
    expected = np.array([0.5, 0.0, 0.9, 0.0]) / np.hypot(0.5, 0.9)
    np.testing.assert_allclose(tf.template, expected, atol=1e-6)


def test_source_errors_are_typed(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"minutes of the meeting\n" * 50)
    with pytest.raises(VideoError, match="cannot open"):
        open_source(bad)
    with pytest.raises(VideoError, match="camera 57"):
        open_source(57)
    with pytest.raises(InvalidArgumentError):
        open_source(bad, buffer=0)
    with pytest.raises(VideoError, match="cannot open the stream"):
        open_source(f"http://127.0.0.1:{free_port()}/none.ts", timeout=2)


def test_analyzer_arguments_are_checked(fast):
    with pytest.raises(InvalidArgumentError):
        VideoAnalyzer(fast, every=0)
    with pytest.raises(InvalidArgumentError):
        VideoAnalyzer(fast, keep=0)
    with pytest.raises(InvalidArgumentError, match="not both"):
        VideoAnalyzer(fast, threshold=0.4, far=1e-4)
