"""One registry implementation and one error contract for the public API."""

from __future__ import annotations

import numpy as np
import pytest

from npcface import FaceRecognizer, NpcfaceError, cosine_similarity, load_image
from npcface.align import align_faces
from npcface.choose import select_face
from npcface.detect import DETECTORS, get_detector, list_detectors
from npcface.errors import (
    InvalidArgumentError,
    ModelError,
    UnknownModelError,
    UnknownNameError,
)
from npcface.eval import evaluate_verification
from npcface.modelinfo import RecognizerInfo
from npcface.models import MODELS, get_model_spec, register_model
from npcface.registry import Registry


def test_registry_names_aliases_and_refusals():
    reg: Registry[int] = Registry("widget")
    reg.add("Alpha", 1, "a")
    reg.register("beta")(2)
    assert reg.get("ALPHA") == 1 and reg.get("a") == 1 and reg.get("Beta") == 2
    assert reg.canonical("A") == "alpha"
    assert reg.names() == ["a", "alpha", "beta"]
    assert reg.names(aliases=False) == ["alpha", "beta"]
    assert list(reg.items()) == [("alpha", 1), ("beta", 2)]
    assert "a" in reg and "gamma" not in reg and 3 not in reg
    with pytest.raises(InvalidArgumentError, match="already registered"):
        reg.add("alpha", 3)  # never a silent replacement
    with pytest.raises(InvalidArgumentError, match="already registered"):
        reg.add("gamma", 3, "A")  # an alias clash too
    assert reg.get("alpha") == 1 and "gamma" not in reg  # nothing half-registered
    with pytest.raises(UnknownNameError, match="valid names: a, alpha, beta"):
        reg.get("gamma")
    with pytest.raises(UnknownNameError):
        reg.get(None)  # type: ignore[arg-type]


def test_models_and_detectors_share_the_registry_rules():
    assert isinstance(MODELS, Registry) and isinstance(DETECTORS, Registry)
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_model(get_model_spec("sface"))
    with pytest.raises(UnknownModelError, match="sface") as exc:
        get_model_spec("sfcae")
    assert isinstance(exc.value, ModelError) and isinstance(exc.value, ValueError)
    assert "yunet" in list_detectors() and "retinaface" in list_detectors()
    with pytest.raises(UnknownModelError, match="retinaface, .*yunet"):
        get_detector("mtcnn")


def test_training_registries_are_the_same_implementation():
    pytest.importorskip("torch")
    from npcface.training.backbones import BACKBONES
    from npcface.training.heads import HEADS

    assert isinstance(HEADS, Registry) and isinstance(BACKBONES, Registry)
    assert HEADS.get("NPCFace") is HEADS.get("npcface")
    with pytest.raises(InvalidArgumentError, match="already registered"):
        HEADS.add("arcface", object)


IMG = np.zeros((64, 64, 3), np.uint8)
PTS = np.array([[20, 25], [44, 25], [32, 35], [24, 48], [40, 48]], np.float32)

BAD_CALLS = {
    "unknown face policy": lambda: FaceRecognizer(face_policy="biggest"),
    "unknown detector": lambda: FaceRecognizer(detector="mtcnn").detect(IMG),
    "detector of the wrong type": lambda: get_detector(42),
    "unknown recogniser": lambda: FaceRecognizer(recognizer="arcface-r999").embed(IMG),
    "policy of a call": lambda: FaceRecognizer().represent(IMG, policy="biggest"),
    "select_face policy": lambda: select_face([], (64, 64, 3), "biggest"),
    "embeddings of different shapes": lambda: cosine_similarity(np.ones(3), np.ones(4)),
    "compare of different shapes": lambda: FaceRecognizer().compare(np.ones(3), np.ones(4)),
    "image of a wrong type": lambda: load_image(12345),
    "empty image": lambda: load_image(np.zeros((0, 0, 3), np.uint8)),
    "crop size": lambda: align_faces(IMG, PTS, 0),
    "crops of the wrong shape": lambda: FaceRecognizer().embed_crops(np.zeros((2, 50, 50, 3))),
    "model metadata": lambda: RecognizerInfo(name="x", input_size=0, embedding_size=8),
    "channel order": lambda: RecognizerInfo(
        name="x", input_size=8, embedding_size=8, channel_order="XYZ"
    ),
    "uncalibrated FAR": lambda: FaceRecognizer().default_threshold(far=0.1234),
    "non-finite scores": lambda: evaluate_verification(
        np.array([0.1, np.nan]), np.array([1, 0]), np.array([0, 1])
    ),
    "batch size": lambda: FaceRecognizer().embed_many([IMG], batch_size=0),
    "crop_many size": lambda: FaceRecognizer().crop_many([IMG], size=-1),
}


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_arguments_raise_npcface_errors(call):
    with pytest.raises(NpcfaceError) as exc:
        call()
    if not isinstance(exc.value, ModelError):  # argument errors stay ValueErrors too
        assert isinstance(exc.value, (ValueError, TypeError)), type(exc.value)
