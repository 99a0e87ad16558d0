"""Calibrated cosine thresholds of the recognisers npcface knows, with how they were obtained.

Regenerate with ``python bench/calibrate_thresholds.py --data ../shared/data/lfw``.
"""

from __future__ import annotations

CALIBRATED: dict[str, dict] = {
    "sface": {
        "thresholds": {"default": 0.363},
        "source": "OpenCV zoo's published cosine threshold for SFace (pending LFW calibration)",
    },
}
