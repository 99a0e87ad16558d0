"""Group faces of photos that ship inside pip packages (no data folder needed).

    python examples/cluster_sample_photos.py OUT_DIR

Makes a small photo collection from scikit-image's astronaut (Eileen Collins) and camera
man and matplotlib's Grace Hopper (each photo also mirrored, turned, shrunk and darkened,
as a second, third ... picture of the same person), then runs ``npcface cluster`` on it:
OUT_DIR/index.html is the contact sheet (the README's picture is a screenshot of it).
Needs ``pip install "npcface[examples]"`` (scikit-image and matplotlib).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2

from npcface import load_image
from npcface.cli import main as npcface


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the sample photo needs the '{package}' package: see this script's docstring")
    return Path(spec.submodule_search_locations[0]) / relative


def variants(img):
    """The photo and four other pictures of the same face."""
    h, w = img.shape[:2]
    out = [img, cv2.flip(img, 1)]
    for angle, scale in ((8, 0.8), (-10, 0.65)):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT))
    out.append(cv2.convertScaleAbs(img, alpha=0.6, beta=0))
    return out


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    people = {  # name: (photo, pictures of that person)
        "astronaut": (package_file("skimage", "data/astronaut.png"), 5),
        "grace_hopper": (package_file("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"), 4),
        "camera_man": (package_file("skimage", "data/camera.png"), 2),
    }
    for name, (path, n) in people.items():
        img = load_image(path)
        for i, v in enumerate(variants(img)[:n]):
            cv2.imwrite(str(photos / f"{name}_{i}.jpg"), v)
    return npcface(["cluster", str(photos), "--out", str(out / "groups")])


if __name__ == "__main__":
    sys.exit(main())
