"""The facade: ``FaceRecognizer().verify(img1, img2)``.

Data flows one way: image -> faces (detector) -> aligned crops (align) -> embeddings
(embedder) -> scores and decisions. Models load on first use, not at construction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .align import align_faces
from .errors import InvalidArgumentError, MultipleFacesError, NoFaceError, NpcfaceError
from .image import ImageInput, describe, load_image
from .modelinfo import RecognizerInfo
from .presets import DEFAULT_PRESET, get_preset
from .quality import DEFAULT_ENROLL_QUALITY, with_qualities, with_quality
from .results import Face, VerifyResult

log = logging.getLogger(__name__)

FACE_POLICIES = ("largest", "center", "best_score", "single")


def select_face(
    faces: Sequence[Face], image_shape: tuple[int, ...], policy: str, name: str = "image"
) -> Face:
    """Pick one face by ``policy``.

    ``largest``: biggest box area. ``center``: box centre nearest the image centre, among
    faces at least a quarter of the largest's area. ``best_score``: highest detector score.
    ``single``: exactly one face, else :class:`MultipleFacesError`.

    Raises:
        NoFaceError: ``faces`` is empty.
    """
    if policy not in FACE_POLICIES:
        raise ValueError(f"unknown face policy {policy!r}; use one of {', '.join(FACE_POLICIES)}")
    if not faces:
        raise NoFaceError(f"{name}: no face found")
    if policy == "single":
        if len(faces) > 1:
            raise MultipleFacesError(f"{name}: {len(faces)} faces found, policy 'single' wants one")
        return faces[0]
    if policy == "best_score":
        return max(faces, key=lambda f: f.score)
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    h, w = image_shape[:2]
    biggest = max(f.area for f in faces)
    near = [f for f in faces if f.area >= 0.25 * biggest]

    def dist(f: Face) -> float:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        return float((cx - w / 2) ** 2 + (cy - h / 2) ** 2)

    return min(near, key=dist)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of two vectors (a float) or row-wise of two (N, d) arrays."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    num = (a * b).sum(axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    sim = num / np.maximum(den, 1e-12)
    return float(sim) if np.ndim(sim) == 0 else sim


class FaceRecognizer:
    """Detect, align, embed, verify, and (with a :class:`~npcface.Gallery`) identify faces.

    Args:
        preset: named configuration of detector, face policy and flip fusion:
            ``"accurate"`` (default: RetinaFace, centre policy, flip fusion) or ``"fast"``
            (YuNet, centre policy, no flip); see :mod:`npcface.presets`. The arguments
            below override the preset's when given.
        detector: registry name (``"yunet"``, ``"retinaface"``) or a detector object.
        recognizer: registry name (``"sface"``) or an ONNX/engine file exported by npcface.
        providers: ONNX Runtime providers; None picks TensorRT, CUDA, then CPU, whichever
            works. Naming a GPU provider that is missing raises ``ProviderError``.
        face_policy: which face to use when an image has several: ``center`` (the photo's
            subject: the most central of the faces at least a quarter of the largest's
            area), ``largest``, ``best_score`` or ``single``.
        flip: fuse each embedding with its mirror image's (slower, slightly more accurate).
        enroll_quality: enrolment refuses faces whose overall quality
            (:class:`npcface.quality.FaceQuality`) is below this (0 accepts all) with
            :class:`npcface.quality.LowQualityError`.
        threads: CPU threads per model (None = all cores).
        backend: recogniser engine: ``auto`` (fastest measured here), ``onnxruntime``,
            ``opencv`` or ``tensorrt``.
        detector_options: extra keyword arguments for the detector (e.g. score_threshold);
            merged over the preset's.
        max_pixels: largest image accepted.
    """

    def __init__(
        self,
        detector: Any = None,
        recognizer: str | os.PathLike[str] = "sface",
        providers: str | Sequence[str] | None = None,
        face_policy: str | None = None,
        flip: bool | None = None,
        threads: int | None = None,
        backend: str = "auto",
        detector_options: dict[str, Any] | None = None,
        max_pixels: int | None = None,
        preset: str = DEFAULT_PRESET,
        enroll_quality: float = DEFAULT_ENROLL_QUALITY,
    ) -> None:
        chosen = get_preset(preset)
        if detector is None:
            detector = chosen.detector
            detector_options = {**chosen.detector_options, **(detector_options or {})}
        face_policy = chosen.face_policy if face_policy is None else face_policy
        flip = chosen.flip if flip is None else flip
        if not 0.0 <= enroll_quality <= 1.0:
            raise InvalidArgumentError(f"enroll_quality must be in [0, 1], got {enroll_quality}")
        self.preset = chosen.name
        self.enroll_quality = float(enroll_quality)
        if face_policy not in FACE_POLICIES:
            raise ValueError(
                f"unknown face policy {face_policy!r}; use one of {', '.join(FACE_POLICIES)}"
            )
        self._detector_arg = detector
        self._recognizer_arg = recognizer
        self.providers = providers
        self.face_policy = face_policy
        self.flip = bool(flip)
        self.threads = threads
        self.backend = backend
        self.detector_options = dict(detector_options or {})
        self.max_pixels = max_pixels
        self._detector = None
        self._embedder = None

    # -- lazily built parts ------------------------------------------------------------
    @property
    def detector(self) -> Any:
        if self._detector is None:
            from .detect import get_detector

            if isinstance(self._detector_arg, str):
                self._detector = get_detector(
                    self._detector_arg,
                    providers=self.providers,
                    threads=self.threads,
                    **self.detector_options,
                )
            else:
                self._detector = get_detector(self._detector_arg)
        return self._detector

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from .embed import Embedder

            self._embedder = Embedder(
                self._recognizer_arg,
                providers=self.providers,
                threads=self.threads,
                backend=self.backend,
                typical_batch=2 if self.flip else 1,
            )
        return self._embedder

    @property
    def info(self) -> RecognizerInfo:
        """Facts of the recogniser: name, input size, embedding size, thresholds."""
        return self.embedder.info

    @property
    def input_size(self) -> int:
        return self.embedder.input_size

    def default_threshold(self, far: float | None = None) -> float:
        """The calibrated cosine threshold: the model default, or the one for ``far``."""
        info = self.info
        if far is not None:
            key = f"far={far:g}"
            if key in info.thresholds:
                return info.thresholds[key]
            known = sorted(k for k in info.thresholds if k.startswith("far="))
            raise NpcfaceError(
                f"{info.name} has no threshold calibrated for FAR {far:g}; calibrated: "
                f"{', '.join(known) or 'none'}; pass threshold= explicitly"
            )
        if "default" not in info.thresholds:
            raise NpcfaceError(
                f"{info.name} has no calibrated default threshold; pass threshold= explicitly"
            )
        return info.thresholds["default"]

    # -- the pipeline ------------------------------------------------------------------
    def load(self, image: ImageInput) -> np.ndarray:
        """Decode and validate an input image (see :func:`npcface.load_image`)."""
        if self.max_pixels is None:
            return load_image(image)
        return load_image(image, max_pixels=self.max_pixels)

    def detect(self, image: ImageInput) -> list[Face]:
        """All faces in an image, best score first, each with its quality."""
        img = self.load(image)
        return with_qualities(img, self.detector.detect(img))

    def align(self, image: ImageInput, faces: Sequence[Face] | Face) -> np.ndarray:
        """Aligned (N, S, S, 3) uint8 BGR crops of ``faces`` at the recogniser's input size."""
        img = self.load(image)
        faces = [faces] if isinstance(faces, Face) else list(faces)
        if not faces:
            return np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        pts = np.stack([f.landmarks for f in faces])
        return align_faces(img, pts, self.input_size)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Unit-norm (N, d) embeddings of aligned crops."""
        return self.embedder.embed(crops, flip=self.flip)

    def represent(self, image: ImageInput, policy: str | None = None) -> tuple[np.ndarray, Face]:
        """Embedding (d,) and face (with its quality) of the face chosen by ``policy``.

        Raises:
            NoFaceError: no face in the image (the message names the input).
            MultipleFacesError: several faces under policy ``single``.
        """
        img = self.load(image)
        faces = self.detector.detect(img)
        face = select_face(faces, img.shape, policy or self.face_policy, describe(image))
        crop = align_faces(img, face.landmarks, self.input_size)
        return self.embed_crops(crop)[0], with_quality(face, crop[0])

    def represent_all(self, image: ImageInput) -> tuple[np.ndarray, list[Face]]:
        """Embeddings (N, d) of every face in ``image`` and the faces, best score first."""
        img = self.load(image)
        faces = self.detector.detect(img)
        if not faces:
            return np.zeros((0, self.info.embedding_size), np.float32), []
        crops = align_faces(img, np.stack([f.landmarks for f in faces]), self.input_size)
        faces = [with_quality(f, c) for f, c in zip(faces, crops, strict=True)]
        return self.embed_crops(crops), faces

    def embed(self, image: ImageInput) -> np.ndarray:
        """Embedding (d,) of the face chosen by the face policy; an aligned crop of the
        recogniser's input size (S x S x 3) is embedded directly."""
        if isinstance(image, np.ndarray) and image.shape == (self.input_size,) * 2 + (3,):
            return self.embed_crops(load_image(image)[None])[0]
        return self.represent(image)[0]

    def compare(self, emb1: np.ndarray, emb2: np.ndarray) -> float | np.ndarray:
        """Cosine similarity of embeddings (higher = more alike); row-wise for (N, d) pairs."""
        return cosine_similarity(emb1, emb2)

    def verify(
        self,
        img1: ImageInput,
        img2: ImageInput,
        threshold: float | None = None,
        far: float | None = None,
    ) -> VerifyResult:
        """Are the faces in two images the same person?

        Args:
            img1, img2: images (path, bytes, array, PIL) or embeddings (1-D arrays).
            threshold: cosine threshold; higher is stricter. Defaults to the model's
                calibrated default.
            far: pick the threshold calibrated for this false-accept rate instead (e.g. 1e-4).

        Raises:
            NoFaceError: an image has no face. ImageError: an image cannot be used.
        """
        thr = float(threshold) if threshold is not None else self.default_threshold(far)
        emb1, face1 = self._embedding_of(img1)
        emb2, face2 = self._embedding_of(img2)
        sim = float(cosine_similarity(emb1, emb2))
        return VerifyResult(
            verified=sim >= thr,
            similarity=sim,
            threshold=thr,
            face1=face1,
            face2=face2,
            model=self.info.name,
        )

    def _embedding_of(self, x: ImageInput) -> tuple[np.ndarray, Face | None]:
        if isinstance(x, np.ndarray) and x.ndim == 1:
            return x.astype(np.float32), None
        return self.represent(x)

    # -- galleries ---------------------------------------------------------------------
    def enroll(
        self,
        gallery: Any,
        identity: str,
        images: Sequence[ImageInput] | ImageInput,
        metadata: dict[str, Any] | None = None,
    ) -> list[int]:
        """Add the faces of ``images`` to ``gallery`` under ``identity``; template ids."""
        from .gallery.facade import enroll

        if not isinstance(images, (list, tuple)):
            images = [images]
        return enroll(self, gallery, identity, images, metadata=metadata)

    def identify(
        self, gallery: Any, image: ImageInput, k: int = 5, threshold: float | None = None
    ) -> list[Any]:
        """The ``k`` most similar identities in ``gallery`` (above ``threshold`` if given)."""
        from .gallery.facade import identify

        return identify(self, gallery, image, k=k, threshold=threshold)
