"""Calibrated cosine thresholds of the recognisers npcface knows, with how they were obtained.

SFace through the default ``accurate`` preset (RetinaFace + centre face + flip fusion),
measured 2026-11-30 on every pair of the 7,701 LFW images that pairs.txt uses (8,101 genuine
and 29,640,749 impostor pairs; 0 images without a face). Each threshold is the smallest at
which at most ``floor(FAR * impostors)`` impostor pairs are accepted, rounded up to 4
decimals (rounding down would accept more):

=========  =========  ======
FAR        threshold  TAR
=========  =========  ======
1e-2       0.3034     0.9968
1e-3       0.3699     0.9930
1e-4       0.4255     0.9849
1e-5       0.4775     0.9680
1e-6       0.5636     0.8896
=========  =========  ======

``sface-int8`` (the same network with INT8 activations and weights except its first
convolution, :mod:`npcface.int8`), through the same ``accurate`` preset on the same pairs
(8,101 genuine, 29,640,749 impostor; 0 images without a face): 0.3052 / 0.3717 / 0.4272 /
0.4787 / 0.5637 at FAR 1e-2..1e-6 (TAR 0.9970 / 0.9927 / 0.9846 / 0.9685 / 0.8909),
2026-12-07, after issue 24 left the first convolution in fp32. The thresholds of the
recipe that quantised it too (0.3058 / 0.3723 / 0.4278 / 0.4796 / 0.5636) give this graph
FAR 0.98e-2 / 0.98e-3 / 0.97e-4 / 0.96e-5 / 1.01e-6. Made from the embeddings that
``python bench/presets_lfw.py --preset accurate --save DIR`` writes (every pair of them,
:func:`npcface.eval.calibrate.thresholds_at_fars`).

The previous thresholds (YuNet + centre, no flip, all 13,233 images: 0.2945 / 0.3633 /
0.4244 / 0.4913 / 0.5939) give the accurate preset FAR 1.3e-2 / 1.3e-3 / 1.05e-4 /
6.0e-6 / 8.4e-7 on the same pairs. The ``fast`` preset (YuNet, no flip) is stricter at these
thresholds than their nominal FAR. Regenerate on all 13,233 images with
``python bench/presets_lfw.py --all --preset accurate`` (or ``npcface calibrate sface --data
../shared/data/lfw --dry-run``); for models exported by npcface, ``npcface calibrate
MODEL.onnx --data DIR`` stores the thresholds in the model's metadata.
"""

from __future__ import annotations

CALIBRATED: dict[str, dict] = {
    "sface": {
        "thresholds": {
            "far=0.01": 0.3034,
            "far=0.001": 0.3699,
            "far=0.0001": 0.4255,
            "far=1e-05": 0.4775,
            "far=1e-06": 0.5636,
            "default": 0.3699,
        },
        "source": (
            "LFW deep-funneled, all 8,101 genuine and 29,640,749 impostor pairs of the 7,701 "
            "pairs.txt images (preset accurate: RetinaFace + center face policy, flip=True); "
            "default = threshold at FAR 0.001; 2026-11-30"
        ),
    },
    "sface-int8": {
        "thresholds": {
            "far=0.01": 0.3052,
            "far=0.001": 0.3717,
            "far=0.0001": 0.4272,
            "far=1e-05": 0.4787,
            "far=1e-06": 0.5637,
            "default": 0.3717,
        },
        "source": (
            "LFW deep-funneled, all 8,101 genuine and 29,640,749 impostor pairs of the 7,701 "
            "pairs.txt images (preset accurate: RetinaFace + center face policy, flip=True, "
            "INT8 recogniser, first convolution fp32); default = threshold at FAR 0.001; "
            "2026-12-07"
        ),
    },
}
