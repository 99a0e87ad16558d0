"""Presets map to pipeline settings; explicit arguments win; unknown names are typed errors."""

from __future__ import annotations

import pytest

from npcface import FaceRecognizer
from npcface.cli import build_parser
from npcface.cli_sdk import recognizer_from_args
from npcface.errors import InvalidArgumentError
from npcface.presets import DEFAULT_PRESET, PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_is_what_the_recogniser_runs(name):
    p = PRESETS[name]
    c = FaceRecognizer(preset=name).config
    assert (c.preset, c.detector, c.recognizer, c.face_policy, c.flip) == (
        name,
        p.detector,
        p.recognizer,
        p.face_policy,
        p.flip,
    )
    assert dict(c.detector_options) == p.detector_options


def test_default_is_the_accurate_preset():
    assert DEFAULT_PRESET == "accurate" and FaceRecognizer().config.preset == "accurate"
    assert FaceRecognizer().config.recognizer == "sface"  # fp32 (issue 24)


def test_recognizer_follows_the_preset_unless_given():
    assert FaceRecognizer(preset="fast").config.recognizer == "sface-int8"
    assert FaceRecognizer(recognizer="sface-int8").config.recognizer == "sface-int8"
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--recognizer", "sface-int8"])
    assert recognizer_from_args(args).config.recognizer == "sface-int8"
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg"])
    assert recognizer_from_args(args).config.recognizer == "sface"
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--preset", "fast"])
    assert recognizer_from_args(args).config.recognizer == "sface-int8"


def test_fast_preset_and_overrides():
    fast = FaceRecognizer(preset="fast").config
    assert (fast.detector, fast.face_policy, fast.flip) == ("yunet", "center", False)
    mixed = FaceRecognizer(preset="fast", flip=True, face_policy="largest", detector="retinaface")
    c = mixed.config
    assert (c.detector, c.face_policy, c.flip) == ("retinaface", "largest", True)
    opts = FaceRecognizer(detector_options={"score_threshold": 0.7}).config
    assert opts.detector_options["score_threshold"] == 0.7


def test_unknown_preset_and_gate_are_typed_errors():
    with pytest.raises(InvalidArgumentError, match="accurate, fast"):
        FaceRecognizer(preset="fastest")
    with pytest.raises(InvalidArgumentError):
        FaceRecognizer(enroll_quality=2.0)


def test_cli_options_reach_the_recognizer():
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--preset", "fast"])
    c = recognizer_from_args(args).config
    assert (c.preset, c.detector, c.flip) == ("fast", "yunet", False)
    args = build_parser().parse_args(["verify", "a.jpg", "b.jpg", "--no-flip"])
    c = recognizer_from_args(args).config
    assert (c.preset, c.detector, c.flip) == ("accurate", "retinaface", False)


def test_a_preset_given_as_the_first_argument_says_how_to_ask_for_it():
    from npcface.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match=r"FaceRecognizer\(preset='fast'\)"):
        FaceRecognizer("fast")
