"""Clustering calibrations of the recognisers npcface ships, with how they were obtained.

Both through the ``accurate`` preset's pipeline (RetinaFace + centre face + flip fusion), on
the tuning data, never on LFW: every photo of ``celeba-subset`` (299 people, 6,300
in-the-wild photos) and ``lag`` (1,010 people, 3,816 loose crops, large age gaps), 10,055
embedded (61 without a face left out). All 50,462,960 impostor pairs (16 label pairs left
out as one person under two labels, see :data:`~npcface.cluster.thresholds.DUPLICATE_LINK`)
give the pair tail and the impostor mean; the 271,210 pairs of people with 4+ photos each
give the identity-level tail (the mean similarity of all their photos); the random-effects
split of impostor scores gives rho.

* ``sface`` (fp32, the accurate preset's recogniser since issue 24): measured 2026-12-07.
* ``sface-int8``: measured 2026-12-07 on the INT8 graph as it was *before* issue 24 left its
  first convolution in fp32 (the graph the fast preset runs now is closer to fp32: its
  verification thresholds moved by at most 0.0006); the two sface calibrations differ by
  less than 0.004 in every threshold at 13k and 1M faces.

Regenerate with ``python bench/cluster.py --calibrate --model NAME --cache NPZ`` (embeddings
computed once through ``FaceRecognizer().embed_many`` and cached outside the repository),
which calls :func:`npcface.cluster.thresholds.calibrate_clustering`.
"""

from __future__ import annotations

from ..errors import InvalidArgumentError
from .thresholds import ClusterCalibration

CALIBRATIONS: dict[str, ClusterCalibration] = {
    "sface": ClusterCalibration(
        model="sface",
        mean=0.0881,
        rho=0.341,
        pair_tail=((1e-2, 0.3131), (1e-3, 0.4067), (1e-4, 0.5051), (1e-5, 0.5987)),
        identity_tail=((1e-2, 0.2208), (1e-3, 0.2693), (1e-4, 0.3088)),
        source=(
            "celeba-subset + lag, 10,055 photos of 1,309 labels: 50,462,960 impostor pairs, "
            "271,210 pairs of people with 4+ photos, 16 label pairs taken for one person; "
            "preset accurate (RetinaFace + center + flip), sface (fp32); 2026-12-07"
        ),
    ),
    "sface-int8": ClusterCalibration(
        model="sface-int8",
        mean=0.0953,
        rho=0.339,
        pair_tail=((1e-2, 0.3185), (1e-3, 0.4105), (1e-4, 0.5060), (1e-5, 0.5993)),
        identity_tail=((1e-2, 0.2273), (1e-3, 0.2772), (1e-4, 0.3143)),
        source=(
            "celeba-subset + lag, 10,055 photos of 1,309 labels: 50,462,960 impostor pairs, "
            "271,210 pairs of people with 4+ photos, 16 label pairs taken for one person; "
            "preset accurate (RetinaFace + center + flip), sface-int8 before issue 24 (first "
            "convolution INT8 too); 2026-12-07"
        ),
    ),
}
"""Calibrations by recogniser name (``RecognizerInfo.name``)."""

DEFAULT_MODEL = "sface"
"""The recogniser of the default preset (``accurate``)."""


def calibration_for(model: str | None = None) -> ClusterCalibration:
    """The shipped calibration of ``model`` (default: the default recogniser's).

    Raises:
        InvalidArgumentError: no calibration for that model; pass ``threshold=`` or a
            calibration measured with :func:`~npcface.cluster.thresholds.calibrate_clustering`.
    """
    name = DEFAULT_MODEL if model is None else model
    try:
        return CALIBRATIONS[name]
    except KeyError:
        raise InvalidArgumentError(
            f"no clustering calibration for model {name!r} (calibrated: "
            f"{', '.join(sorted(CALIBRATIONS))}); pass threshold=, or calibration= from "
            "npcface.cluster.calibrate_clustering on labelled photos of many people",
            input="model",
        ) from None
