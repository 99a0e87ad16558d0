"""Presets map to pipeline settings; explicit arguments win; unknown names are typed errors."""

from __future__ import annotations

import pytest

from npcface import FaceRecognizer
from npcface.cli import build_parser
from npcface.cli_sdk import recognizer_from_args
from npcface.errors import InvalidArgumentError
from npcface.presets import DEFAULT_PRESET, PRESETS


def test_default_is_the_accurate_preset():
    rec = FaceRecognizer()
    acc = PRESETS[DEFAULT_PRESET]
    assert DEFAULT_PRESET == "accurate" and rec.preset == "accurate"
    assert (rec._detector_arg, rec.face_policy, rec.flip) == (
        acc.detector,
        acc.face_policy,
        acc.flip,
    )
    assert rec.detector_options == acc.detector_options
    assert rec._recognizer_arg == acc.recognizer == "sface"  # fp32 (issue 24)


def test_recognizer_follows_the_preset_unless_given():
    assert FaceRecognizer(preset="fast")._recognizer_arg == "sface-int8"
    assert FaceRecognizer(recognizer="sface-int8")._recognizer_arg == "sface-int8"  # on request
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--recognizer", "sface-int8"])
    assert recognizer_from_args(args)._recognizer_arg == "sface-int8"
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg"])
    assert recognizer_from_args(args)._recognizer_arg == "sface"
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--preset", "fast"])
    assert recognizer_from_args(args)._recognizer_arg == "sface-int8"


def test_fast_preset_and_overrides():
    fast = FaceRecognizer(preset="fast")
    assert (fast._detector_arg, fast.face_policy, fast.flip) == ("yunet", "center", False)
    mixed = FaceRecognizer(preset="fast", flip=True, face_policy="largest", detector="retinaface")
    assert (mixed._detector_arg, mixed.face_policy, mixed.flip) == ("retinaface", "largest", True)
    opts = FaceRecognizer(detector_options={"score_threshold": 0.7})
    assert opts.detector_options["score_threshold"] == 0.7


def test_unknown_preset_and_gate_are_typed_errors():
    with pytest.raises(InvalidArgumentError, match="accurate, fast"):
        FaceRecognizer(preset="fastest")
    with pytest.raises(InvalidArgumentError):
        FaceRecognizer(enroll_quality=2.0)


def test_cli_options_reach_the_recognizer():
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--preset", "fast"])
    rec = recognizer_from_args(args)
    assert (rec.preset, rec._detector_arg, rec.flip) == ("fast", "yunet", False)
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--no-flip"])
    rec = recognizer_from_args(args)
    assert (rec.preset, rec._detector_arg, rec.flip) == ("accurate", "retinaface", False)
