"""Verify faces in sample photos that ship inside pip packages (no data folder needed).

    python examples/verify_two_images.py

Uses scikit-image's astronaut (Eileen Collins) and matplotlib's Grace Hopper; both come with
``pip install "npcface[examples]"`` (scikit-image and matplotlib).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2

from npcface import FaceRecognizer, load_image


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the sample photo needs the '{package}' package: see this script's docstring")
    return Path(spec.submodule_search_locations[0]) / relative


def main() -> int:
    astronaut = package_file("skimage", "data/astronaut.png")
    hopper = package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")

    # A second, different picture of the astronaut: mirrored, rotated 8 degrees, shrunk.
    img = load_image(astronaut)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 8, 0.7)
    other = cv2.warpAffine(cv2.flip(img, 1), m, (w, h), borderMode=cv2.BORDER_REFLECT)

    rec = FaceRecognizer()
    for label, a, b in [
        ("astronaut vs Grace Hopper", astronaut, hopper),
        ("astronaut vs astronaut (mirrored, rotated, shrunk)", astronaut, other),
    ]:
        r = rec.verify(a, b)
        verdict = "same person" if r.verified else "different people"
        print(f"{label}: {verdict} (similarity {r.similarity:.3f}, threshold {r.threshold:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
