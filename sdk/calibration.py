"""Calibrated cosine thresholds of the recognisers npcface knows, with how they were obtained.

Regenerate with ``python bench/calibrate_thresholds.py --data ../shared/data/lfw``.

SFace on all LFW image pairs (no flip fusion), measured 2026-11-22:

=========  =========  ======
FAR        threshold  TAR
=========  =========  ======
1e-2       0.2945     0.9981
1e-3       0.3633     0.9969
1e-4       0.4244     0.9935
1e-5       0.4913     0.9803
1e-6       0.5939     0.8790
=========  =========  ======

The default (FAR 1e-3) agrees with OpenCV zoo's published SFace threshold (0.363).
"""

from __future__ import annotations

CALIBRATED: dict[str, dict] = {
    "sface": {
        "thresholds": {
            "far=0.01": 0.2945,
            "far=0.001": 0.3633,
            "far=0.0001": 0.4244,
            "far=1e-05": 0.4913,
            "far=1e-06": 0.5939,
            "default": 0.3633,
        },
        "source": (
            "LFW deep-funneled, all 242,257 genuine and 87,307,271 impostor image pairs "
            "(13233 images, YuNet + center face policy, flip=False); default = threshold at "
            "FAR 0.001; bench/calibrate_thresholds.py"
        ),
    },
}
