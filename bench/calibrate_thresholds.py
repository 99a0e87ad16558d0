"""Calibrate a recogniser's cosine thresholds at stated false-accept rates on all of LFW.

    python bench/calibrate_thresholds.py --data ../shared/data/lfw [--recognizer sface]
        [--preset accurate|fast]

Runs :func:`npcface.eval.calibrate.calibrate` (every LFW image embedded with the preset's
pipeline, every image pair scored: about 242k genuine and 87M impostor pairs) and prints the
thresholds with the TAR each gives, and the Python entry for ``sdk/calibration.py``. For a
model exported by npcface, ``npcface calibrate MODEL.onnx --data DIR`` stores them in the
model's metadata instead.
"""

from __future__ import annotations

import argparse
import json
import math

from npcface import FaceRecognizer
from npcface.eval.calibrate import calibrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--recognizer", default="sface")
    ap.add_argument("--preset", default="accurate")
    args = ap.parse_args()

    rec = FaceRecognizer(recognizer=args.recognizer, preset=args.preset)
    cal = calibrate(rec, args.data)
    print(
        f"images {cal.images}, no face {cal.failed}, genuine pairs {cal.genuine:,}, "
        f"impostor pairs {cal.impostor:,}"
    )
    for key, thr in cal.thresholds.items():
        if key in cal.tar:
            print(f"{key}: threshold {thr:.4f}, TAR {cal.tar[key]:.4f}")
    # rounded up: a rounded-down threshold would accept more impostors than its FAR
    entry = {"thresholds": {k: math.ceil(v * 1e4) / 1e4 for k, v in cal.thresholds.items()}}
    entry["source"] = cal.source
    print(json.dumps({rec.info.name: entry}, indent=4))


if __name__ == "__main__":
    main()
