"""Five-point similarity alignment (Umeyama least squares) to the canonical template.

The template is ArcFace's five points for a 112x112 crop (left eye, right eye, nose tip,
left and right mouth corner), scaled by S / 112 for an S x S crop: 112 for SFace/ArcFace,
120 for our own models as in the NPCFace paper.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import InvalidArgumentError

ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def reference_landmarks(size: int = 112) -> np.ndarray:
    """The (5, 2) template for an ``size`` x ``size`` crop."""
    if size <= 0:
        raise InvalidArgumentError(f"crop size must be positive, got {size}")
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms mapping ``src`` points onto ``dst`` (Umeyama 1991).

    Args:
        src: (N, K, 2) or (K, 2) source points (K >= 2).
        dst: (K, 2) or (N, K, 2) destination points.

    Returns:
        (N, 2, 3) or (2, 3) affine matrices [sR | t] minimising sum ||sR src + t - dst||^2
        with R a proper rotation (no reflection).
    """
    single = np.ndim(src) == 2
    src = np.asarray(src, dtype=np.float64).reshape(-1, *np.shape(src)[-2:])
    dst = np.broadcast_to(np.asarray(dst, dtype=np.float64), src.shape)
    k = src.shape[1]
    mu_s = src.mean(axis=1, keepdims=True)
    mu_d = dst.mean(axis=1, keepdims=True)
    sc, dc = src - mu_s, dst - mu_d
    var_s = (sc**2).sum(axis=(1, 2)) / k
    cov = np.einsum("nki,nkj->nij", dc, sc) / k  # (N, 2, 2): dst x src^T
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones((len(src), 2))
    sign[:, 1] = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    rot = np.einsum("nij,nj,njk->nik", u, sign, vt)
    scale = (d * sign).sum(axis=1) / np.maximum(var_s, 1e-12)
    trans = mu_d[:, 0, :] - scale[:, None] * np.einsum("nij,nj->ni", rot, mu_s[:, 0, :])
    mats = np.concatenate([scale[:, None, None] * rot, trans[:, :, None]], axis=2)
    return mats[0] if single else mats


def align_faces(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp each face of ``image`` to an aligned ``size`` x ``size`` crop.

    Args:
        image: (H, W, 3) uint8 BGR.
        landmarks: (N, 5, 2) or (5, 2) pixel landmarks in :data:`npcface.results.LANDMARK_NAMES`
            order.
        size: crop side S.

    Returns:
        (N, S, S, 3) uint8 BGR crops (N = 1 for a single (5, 2) input).
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    mats = similarity_transforms(pts, reference_landmarks(size))
    out = np.empty((len(pts), size, size, 3), dtype=np.uint8)
    for i, m in enumerate(mats):
        out[i] = cv2.warpAffine(
            image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    return out
