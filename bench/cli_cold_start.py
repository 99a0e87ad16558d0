"""Cold start of ``npcface verify A B`` against a minimal OpenCV script doing the same.

    python bench/cli_cold_start.py --data ../shared/data/lfw [--runs 7] [--preset accurate]

Each run is a whole new process, timed from start to exit, side by side: the two commands
alternate (which goes first alternates too), so load on the machine hits both alike. The
peer is the 12-line script below: OpenCV's ``FaceDetectorYN`` (YuNet) and
``FaceRecognizerSF`` (SFace) on the same weight files npcface ships, as OpenCV's samples
use them. Its model files are written once before timing (OpenCV 5 refuses SFace's shipped
file until its dangling inputs are dropped, as npcface's prepared copy does); npcface's own
caches (prepared models, engine choice, OpenVINO's compiled models) are warmed by one
untimed run of each first, as they are on any machine after the first use. Python's
bytecode caches are on for both, as on a user's machine (``PYTHONDONTWRITEBYTECODE`` is
dropped from the children's environment unless ``--keep-env``: with it set, every start
compiles npcface's modules from source again).

Prints the median, min and max wall time of each and the ratio of medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPENCV_SCRIPT = """\
import sys, cv2, numpy as np
det_path, rec_path, a, b = sys.argv[1:5]
det = cv2.FaceDetectorYN.create(det_path, "", (320, 320), 0.6, 0.3, 5000)
rec = cv2.FaceRecognizerSF.create(rec_path, "")
feats = []
for path in (a, b):
    img = cv2.imread(path)
    det.setInputSize((img.shape[1], img.shape[0]))
    faces = det.detect(img)[1]
    feats.append(rec.feature(rec.alignCrop(img, faces[0])))
score = rec.match(feats[0], feats[1], cv2.FaceRecognizerSF_FR_COSINE)
print("same person" if score >= 0.363 else "different people", score)
"""


def opencv_models(folder: Path) -> tuple[str, str]:
    """YuNet and SFace files for OpenCV: the shipped ones, SFace without dangling inputs."""
    import onnx

    from npcface.modelprep import drop_dangling_inputs
    from npcface.models import get_model_spec, original_file

    det = original_file(get_model_spec("yunet"))
    model = onnx.load(str(original_file(get_model_spec("sface"))))
    drop_dangling_inputs(model)
    rec = folder / "sface.onnx"
    onnx.save(model, str(rec))
    return str(det), str(rec)


def npcface_command() -> list[str]:
    """The console script installed beside this Python, else ``python -m npcface.cli``."""
    script = Path(sys.executable).with_name("npcface")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "npcface.cli"]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw", help="LFW folder (images/)")
    ap.add_argument("--runs", type=int, default=7, help="timed runs of each")
    ap.add_argument("--preset", default="accurate")
    ap.add_argument("--a", default="Colin_Powell/Colin_Powell_0001.jpg")
    ap.add_argument("--b", default="Colin_Powell/Colin_Powell_0002.jpg")
    ap.add_argument("--keep-env", action="store_true", help="keep PYTHONDONTWRITEBYTECODE")
    args = ap.parse_args()
    env = dict(os.environ)
    if not args.keep_env:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    images = Path(args.data) / "images"
    a, b = str(images / args.a), str(images / args.b)
    tmp = Path(tempfile.mkdtemp(prefix="cold-start-"))
    try:
        script = tmp / "opencv_verify.py"
        script.write_text(OPENCV_SCRIPT)
        det, rec = opencv_models(tmp)
        cmds = {
            "npcface verify": [*npcface_command(), "verify", a, b, "--preset", args.preset],
            "OpenCV script": [sys.executable, str(script), det, rec, a, b],
        }
        for cmd in cmds.values():  # warm caches (and the OS's file cache)
            timed(cmd, env)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        names = list(cmds)
        for i in range(args.runs):
            for name in names if i % 2 == 0 else names[::-1]:
                times[name].append(timed(cmds[name], env))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, ts in times.items():
        print(
            f"{name:<15} median {statistics.median(ts):.3f} s "
            f"(min {min(ts):.3f}, max {max(ts):.3f}, {len(ts)} runs)"
        )
    ratio = statistics.median(times["npcface verify"]) / statistics.median(times["OpenCV script"])
    print(f"ratio of medians: {ratio:.2f}x (preset {args.preset})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
