"""The enrolment quality gate: one-by-one enrolment refuses a poor face with a typed error and
enrols nothing; bulk enrolment reports it and carries on."""

from __future__ import annotations

import csv

import cv2
import pytest
from conftest import lfw_image

from npcface import FaceRecognizer
from npcface.enroll import enroll_images, list_images
from npcface.gallery import Gallery
from npcface.quality import DEFAULT_ENROLL_QUALITY, LowQualityError


@pytest.fixture(scope="module")
def photos(lfw_dir, tmp_path_factory):
    """A good photo and a poor one (shrunk to a quarter and blurred) of the same person."""
    root = tmp_path_factory.mktemp("people")
    (root / "tony").mkdir()
    img = cv2.imread(str(lfw_image(lfw_dir, "Tony_Blair", 2)))
    good, poor = root / "tony" / "good.jpg", root / "tony" / "poor.jpg"
    cv2.imwrite(str(good), img)
    small = cv2.resize(img, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(poor), cv2.GaussianBlur(small, (0, 0), 1.2))
    return root, good, poor


@pytest.fixture(scope="module")
def rec():
    return FaceRecognizer()


def test_the_poor_photo_is_below_the_default_gate(photos, rec):
    _, good, poor = photos
    assert rec.enroll_quality == DEFAULT_ENROLL_QUALITY
    assert rec.represent(good)[1].quality.overall >= DEFAULT_ENROLL_QUALITY
    assert rec.represent(poor)[1].quality.overall < DEFAULT_ENROLL_QUALITY


def test_enrol_refuses_a_poor_face_and_enrols_nothing(photos, rec, tmp_path):
    _, good, poor = photos
    with Gallery.create(tmp_path / "g", 128) as g:
        with pytest.raises(LowQualityError, match="poor.jpg.*below the enrolment gate") as err:
            rec.enroll(g, "tony", [good, poor])
        assert err.value.quality.overall < err.value.gate
        assert len(g) == 0
        assert len(rec.enroll(g, "tony", [good])) == 1


def test_gate_zero_accepts_every_face(photos, tmp_path):
    _, good, poor = photos
    open_gate = FaceRecognizer(enroll_quality=0.0)
    with Gallery.create(tmp_path / "g", 128) as g:
        assert len(open_gate.enroll(g, "tony", [good, poor])) == 2


def test_bulk_enrolment_reports_faces_below_the_gate(photos, rec, tmp_path):
    root, _, poor = photos
    report = tmp_path / "report.csv"
    with Gallery.create(tmp_path / "g", 128) as g:
        summary = enroll_images(g, rec, list_images(root), workers=0, report=report, progress=False)
        assert (summary.enrolled, summary.failed, summary.low_quality) == (1, 1, 1)
        assert len(g) == 1
    with open(report, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["path"], r["kind"]) for r in rows] == [(str(poor), "low_quality")]
