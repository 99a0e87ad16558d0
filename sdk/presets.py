"""Named pipeline configurations: ``FaceRecognizer(preset="accurate" | "fast")``.

A preset fixes the detector (and its options), the face policy, flip fusion and the
recogniser. Arguments
given to :class:`~npcface.FaceRecognizer` explicitly override the preset's. Figures (LFW
10-fold accuracy through the public API, time per photo as a ratio to OpenCV's own YuNet +
SFace pipeline measured in the same run) are in the README's "Presets" section and were
measured with ``bench/pipeline_vs_opencv.py --preset NAME`` and ``bench/presets_lfw.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgumentError


@dataclass(frozen=True)
class Preset:
    """One pipeline configuration.

    Attributes:
        name: the preset's name.
        detector: detector registry name.
        detector_options: keyword arguments for the detector.
        face_policy: which face of a photo is used (see :data:`npcface.choose.FACE_POLICIES`).
        recognizer: recogniser registry name.
        flip: fuse each embedding with its mirror image's.
        summary: one line on what it is for.
    """

    name: str
    detector: str
    detector_options: dict[str, Any] = field(default_factory=dict)
    face_policy: str = "center"
    flip: bool = False
    summary: str = ""
    recognizer: str = "sface"


PRESETS: dict[str, Preset] = {
    "accurate": Preset(
        name="accurate",
        detector="retinaface",
        detector_options={},
        face_policy="center",
        flip=True,
        summary="RetinaFace landmarks (hold on turned faces), the centred subject, flip fusion",
        # fp32: INT8 lost 0.7 points on a held-out frontal-to-profile benchmark and is no
        # faster in this pipeline on OpenVINO (docs/accuracy.md)
        recognizer="sface",
    ),
    "fast": Preset(
        name="fast",
        detector="yunet",
        detector_options={},
        face_policy="center",
        flip=False,
        summary="YuNet int8, the centred subject, one forward pass per face: for throughput",
        recognizer="sface-int8",  # first convolution fp32 (docs/accuracy.md)
    ),
}
DEFAULT_PRESET = "accurate"


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        InvalidArgumentError: unknown name (the message lists the known ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"unknown preset {name!r}; use one of {', '.join(sorted(PRESETS))}"
        ) from None
