"""The facade: ``FaceRecognizer().verify(img1, img2)``.

Data flows one way: image -> faces (detector) -> aligned crops (align) -> embeddings
(embedder) -> scores and decisions. Models load on first use, not at construction.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .align import align_faces
from .choose import check_policy, select_face
from .config import RecognizerConfig, providers_tuple
from .errors import EmbeddingError, InvalidArgumentError, NpcfaceError
from .image import ImageInput, describe, load_image
from .modelinfo import RecognizerInfo
from .presets import DEFAULT_PRESET, PRESETS
from .quality import DEFAULT_ENROLL_QUALITY, check_enrollable, with_qualities, with_quality
from .results import CropResult, EmbedResult, Face, Match, VerifyResult
from .validate import check_embeddings, check_threshold, is_embedding_like

log = logging.getLogger(__name__)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of two vectors (a float) or row-wise of two (N, d) arrays.

    Raises:
        EmbeddingError: shapes differ, or a vector is all zero or not finite.
    """
    if np.shape(a) != np.shape(b):
        raise EmbeddingError(f"embeddings differ in shape: {np.shape(a)} vs {np.shape(b)}")
    a = check_embeddings(a, what="first embedding").reshape(np.shape(a))
    b = check_embeddings(b, what="second embedding").reshape(np.shape(b))
    num = (a * b).sum(axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    # rounding can take the cosine of a vector with itself just past 1 (1.0000001), where
    # arccos is NaN: it is a cosine, so it lies in [-1, 1]
    sim = np.clip(num / np.maximum(den, 1e-12), -1.0, 1.0)
    return float(sim) if np.ndim(sim) == 0 else sim


class FaceRecognizer:
    """Detect, align, embed, verify, and (with a :class:`~npcface.Gallery`) identify faces.

    This class owns the one pipeline: image -> faces -> the chosen face -> aligned crop ->
    embedding. :meth:`embed_many` runs it over many images and batches the crops for the
    recogniser; evaluation, enrolment, training's dataset preparation, export's parity crops
    and the service all call it.

    Thread safety: one ``FaceRecognizer`` may be shared by any number of threads. Models are
    built once under a lock on first use; every engine (ONNX Runtime, OpenVINO, OpenCV DNN,
    TensorRT) is safe to call concurrently (see :mod:`npcface.runtime`), and the detectors
    keep no per-call state on the object. On CPU, concurrency buys little: the engines
    already use all cores for one call.

    Args:
        preset: named configuration of detector, face policy and flip fusion:
            ``"accurate"`` (default: RetinaFace, centre policy, flip fusion) or ``"fast"``
            (YuNet, centre policy, no flip); see :mod:`npcface.presets`. The arguments
            below override the preset's when given.
        detector: registry name (``"yunet"``, ``"retinaface"``) or a detector object.
        recognizer: registry name (``"sface"``, ``"sface-int8"``) or an ONNX/engine file
            exported by npcface; None takes the preset's (``sface`` for
            ``accurate``, ``sface-int8`` for ``fast``).
        providers: ONNX Runtime providers; None picks TensorRT, CUDA, then CPU, whichever
            works. Naming a GPU provider that is missing raises ``ProviderError``.
        face_policy: which face to use when an image has several: ``center`` (the photo's
            subject: the most central of the faces at least a quarter of the largest's
            area), ``largest``, ``best_score`` or ``single``.
        enroll_quality: enrolment refuses faces whose overall quality
            (:class:`npcface.quality.FaceQuality`) is below this (0 accepts all) with
            :class:`npcface.quality.LowQualityError`.
        flip: fuse each embedding with its mirror image's (slower, slightly more accurate).
        threads: CPU threads per model (None = all cores).
        backend: recogniser engine: ``auto`` (fastest measured here), ``onnxruntime``,
            ``openvino``, ``opencv`` or ``tensorrt``.
        detector_options: extra keyword arguments for the detector (e.g. score_threshold,
            max_side, refine); merged over the preset's.
        max_pixels: largest image accepted, in pixels (default 64 M): the one limit,
            checked from the header before decoding (Pillow's own 89.5 M guard does not
            apply, so 150_000_000 admits a 108 MP photo).
        embedder: an object to embed aligned crops with instead of the recogniser's
            engine (``info``, ``input_size`` and ``embed(crops, flip)`` as
            :class:`npcface.embed.Embedder`; export's torch reference is one).

    All of these but ``embedder`` and a detector object form :attr:`config`, a
    :class:`~npcface.config.RecognizerConfig` checked here, at construction: an unknown
    name or a number out of range raises now, not at first use. The same pipeline is
    built from a config with :meth:`from_config`.

    Raises:
        InvalidArgumentError: (``UnknownNameError`` for names) an unknown preset, detector,
            recogniser, face policy or backend, or a number out of range.
    """

    def __init__(
        self,
        detector: Any = None,
        recognizer: str | os.PathLike[str] | None = None,
        providers: str | Sequence[str] | None = None,
        face_policy: str | None = None,
        flip: bool | None = None,
        threads: int | None = None,
        backend: str = "auto",
        detector_options: dict[str, Any] | None = None,
        max_pixels: int | None = None,
        preset: str = DEFAULT_PRESET,
        enroll_quality: float = DEFAULT_ENROLL_QUALITY,
        *,
        embedder: Any = None,
    ) -> None:
        if isinstance(detector, str) and detector in PRESETS:  # FaceRecognizer("fast")
            raise InvalidArgumentError(
                f"{detector!r} is a preset, not a detector: FaceRecognizer(preset={detector!r})",
                input="detector",
            )
        custom = detector if detector is not None and not isinstance(detector, str) else None
        config = RecognizerConfig(
            preset=preset,
            detector=None if custom is not None else detector,
            detector_options=detector_options or {},
            recognizer=os.fspath(recognizer) if recognizer is not None else None,
            face_policy=face_policy,
            flip=flip,
            providers=providers_tuple(providers),
            backend=backend,
            threads=threads,
            max_pixels=max_pixels,
            enroll_quality=enroll_quality,
        )
        self._setup(config.resolved(), custom, embedder)

    @classmethod
    def from_config(cls, config: RecognizerConfig, *, embedder: Any = None) -> FaceRecognizer:
        """The recogniser a :class:`~npcface.config.RecognizerConfig` describes (nothing is
        loaded yet); ``embedder`` as in the constructor."""
        rec = cls.__new__(cls)
        rec._setup(config.resolved(), None, embedder)
        return rec

    def _setup(self, config: RecognizerConfig, custom_detector: Any, embedder: Any) -> None:
        self.config = config
        """The pipeline, resolved (the preset's values filled in)."""
        self._custom_detector = custom_detector
        self.preset = config.preset
        self.enroll_quality = config.enroll_quality
        self.providers = config.providers
        self.face_policy = check_policy(str(config.face_policy))
        self.flip = bool(config.flip)
        self.threads = config.threads
        self.backend = config.backend
        self.detector_options = dict(config.detector_options)
        self.max_pixels = config.max_pixels
        self._detector = None
        self._embedder = embedder
        self._custom_embedder = embedder is not None
        # one lock per part: the detector may be built in one thread while the recogniser is
        # built in another (see :meth:`prefetch_detector`)
        self._detector_lock = threading.Lock()
        self._embedder_lock = threading.Lock()

    # -- lazily built parts (built once, under a lock) ---------------------------------
    @property
    def detector(self) -> Any:
        if self._detector is None:
            with self._detector_lock:
                if self._detector is None:
                    self._detector = self._build_detector()
        return self._detector

    def _build_detector(self) -> Any:
        from .detect import get_detector

        if self._custom_detector is not None:
            return get_detector(self._custom_detector)
        return get_detector(
            str(self.config.detector),
            providers=self.providers,
            threads=self.threads,
            **self.detector_options,
        )

    def prefetch_detector(self) -> threading.Thread:
        """Start building the detector in a background thread and return it; the caller goes
        on (typically to the recogniser, which takes longer), and the first detection waits
        for it. A failure there is left for that first detection to raise. Used by the CLI:
        on 2 cores it overlaps the two models' start-up."""

        def build() -> None:
            try:
                _ = self.detector
            except Exception:  # noqa: BLE001 - raised again by the first real use
                log.debug("building the detector in the background failed", exc_info=True)

        thread = threading.Thread(target=build, name="npcface-detector", daemon=True)
        thread.start()
        return thread

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    from .embed import Embedder

                    self._embedder = Embedder(
                        str(self.config.recognizer),
                        providers=self.providers,
                        threads=self.threads,
                        backend=self.backend,
                        typical_batch=2 if self.flip else 1,
                        even_batches=self.flip,
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
            raise InvalidArgumentError(
                f"{info.name} has no threshold calibrated for FAR {far:g}; calibrated: "
                f"{', '.join(known) or 'none'}; pass threshold= explicitly",
                input="far",
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
        """Unit-norm (N, d) embeddings of aligned (N, S, S, 3) uint8 BGR crops."""
        return self.embedder.embed(crops, flip=self.flip)

    def _is_crop(self, image: ImageInput, size: int) -> bool:
        return isinstance(image, np.ndarray) and image.shape == (size, size, 3)

    def _crop(
        self,
        image: ImageInput,
        policy: str,
        size: int,
        name: str,
        timings: dict[str, float] | None = None,
        aligned_arrays: bool = True,
        found: list[int] | None = None,
        min_quality: float | None = None,
    ) -> tuple[Face | None, np.ndarray]:
        """The pipeline's front half for one image: decode, detect, choose, align.

        With ``aligned_arrays``, an array that already is an aligned ``size`` x ``size`` x 3
        crop is passed through (its face is None). ``found`` receives the number of faces.
        """
        t0 = time.perf_counter()
        img = self.load(image)
        if aligned_arrays and self._is_crop(image, size):
            return None, img
        t1 = time.perf_counter()
        faces = self.detector.detect(img)
        if found is not None:
            found.append(len(faces))
        face = select_face(faces, img.shape, policy, name)
        t2 = time.perf_counter()
        crop = align_faces(img, face.landmarks, size)[0]
        t3 = time.perf_counter()
        face = with_quality(face, crop)
        check_enrollable(face, min_quality, name)
        if timings is not None:
            t4 = time.perf_counter()
            timings["decode"] = timings.get("decode", 0.0) + t1 - t0
            timings["detect"] = timings.get("detect", 0.0) + t2 - t1
            timings["align"] = timings.get("align", 0.0) + t3 - t2
            timings["quality"] = timings.get("quality", 0.0) + t4 - t3
        return face, crop

    def _crops(
        self,
        images: Iterable[ImageInput],
        policy: str | None,
        size: int,
        names: Sequence[str] | None,
        timings: dict[str, float] | None = None,
        aligned_arrays: bool = True,
        min_quality: float | None = None,
    ) -> Iterator[CropResult]:
        policy = check_policy(policy or self.face_policy)
        for i, image in enumerate(images):
            name = names[i] if names is not None else describe(image)
            found: list[int] = []
            try:
                face, crop = self._crop(
                    image, policy, size, name, timings, aligned_arrays, found, min_quality
                )
            except NpcfaceError as exc:
                yield CropResult(i, name, None, None, exc, sum(found))
            except (MemoryError, RecursionError):
                raise
            except Exception as exc:  # noqa: BLE001 - one bad image must not stop a batch
                err = NpcfaceError(f"{name}: {type(exc).__name__}: {exc}")
                err.__cause__ = exc
                yield CropResult(i, name, None, None, err, sum(found))
            else:
                yield CropResult(i, name, face, crop, None, sum(found))

    def crop_many(
        self,
        images: Iterable[ImageInput],
        policy: str | None = None,
        size: int | None = None,
        names: Sequence[str] | None = None,
        *,
        aligned_arrays: bool = True,
    ) -> list[CropResult]:
        """Aligned crops of the chosen face of each image; failures are values.

        Args:
            images: paths, bytes, arrays or PIL images.
            policy: face policy (default: the recogniser's).
            size: crop side S in pixels (default: the recogniser's input size; giving it
                avoids loading the recogniser).
            names: names for results and messages (default: derived from the inputs).
            aligned_arrays: take an array that already is S x S x 3 as an aligned crop
                (False: detect and align it like any photo).

        Returns:
            One :class:`~npcface.results.CropResult` per image, in input order: a (S, S, 3)
            uint8 BGR crop, or an ``error`` (``ImageError``, ``NoFaceError``, ...).

        Raises:
            InvalidArgumentError: unknown policy or bad size.
        """
        size = self._check_size(size)
        return list(self._crops(images, policy, size, names, aligned_arrays=aligned_arrays))

    def embed_many(
        self,
        images: Iterable[ImageInput],
        policy: str | None = None,
        names: Sequence[str] | None = None,
        batch_size: int = 64,
        *,
        timings: dict[str, float] | None = None,
        aligned_arrays: bool = True,
        min_quality: float | None = None,
    ) -> list[EmbedResult]:
        """Embeddings of the chosen face of each image, crops batched across images.

        Each image is decoded once, detected once, its face chosen by ``policy`` and
        aligned; crops of up to ``batch_size`` images go to the recogniser together.

        Args:
            images: paths, bytes, arrays or PIL images (an array that already is an aligned
                S x S x 3 crop is embedded as it is).
            policy: face policy (default: the recogniser's).
            names: names for results and messages (default: derived from the inputs).
            batch_size: crops per recogniser call.
            timings: if given, seconds spent per stage (decode, detect, align, quality,
                embed) are added to it.
            aligned_arrays: take an array that already is S x S x 3 as an aligned crop
                (False: detect and align it like any photo).
            min_quality: refuse faces whose overall quality is below this, as a per-image
                :class:`~npcface.errors.LowQualityError` (kind ``low_quality``); enrolment
                passes the recogniser's ``enroll_quality``.

        Returns:
            One :class:`~npcface.results.EmbedResult` per image, in input order: a (d,)
            float32 unit embedding, or an ``error`` (``ImageError``, ``NoFaceError``, ...).

        Raises:
            InvalidArgumentError: unknown policy or batch_size < 1.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
        size = self.input_size
        out: list[EmbedResult] = []
        pending: list[CropResult] = []

        def flush() -> None:
            if not pending:
                return
            t0 = time.perf_counter()
            embs = self.embed_crops(np.stack([r.crop for r in pending]))
            if timings is not None:
                timings["embed"] = timings.get("embed", 0.0) + time.perf_counter() - t0
            for r, e in zip(pending, embs, strict=True):
                out[r.index] = EmbedResult(r.index, r.name, r.face, e, None, r.faces_found)
            pending.clear()

        for r in self._crops(images, policy, size, names, timings, aligned_arrays, min_quality):
            out.append(EmbedResult(r.index, r.name, r.face, None, r.error, r.faces_found))
            if r.ok:
                pending.append(r)
                if len(pending) >= batch_size:
                    flush()
        flush()
        return out

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.input_size
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 8:
            raise InvalidArgumentError(f"crop size must be an int >= 8 pixels, got {size!r}")
        return int(size)

    def represent(self, image: ImageInput, policy: str | None = None) -> tuple[np.ndarray, Face]:
        """Embedding (d,) and face of the face chosen by ``policy`` in ``image``.

        Raises:
            NoFaceError: no face in the image (the message names the input).
            MultipleFacesError: several faces under policy ``single``.
            ImageError: the image cannot be used.
        """
        policy = check_policy(policy or self.face_policy)
        face, crop = self._crop(image, policy, self.input_size, describe(image))
        return self.embed_crops(crop[None])[0], face

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
        recogniser's input size (S x S x 3 array) is embedded directly."""
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
            img1, img2: images (path, bytes, array, PIL) or embeddings: a (d,) vector or a
                (1, d) row as ``represent_all`` and ``embed_crops`` return.
            threshold: cosine similarity in [-1, 1]; higher is stricter. Defaults to the
                model's calibrated default.
            far: pick the threshold calibrated for this false-accept rate instead (e.g. 1e-4).

        Raises:
            NoFaceError: an image has no face. ImageError: an image cannot be used.
            InvalidArgumentError: the threshold is not a finite number in [-1, 1].
            EmbeddingError: an embedding has the wrong size, is all zero or not finite.
        """
        thr = self.decision_threshold(threshold, far)
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
        if is_embedding_like(x):
            return check_embeddings(x, self.info.embedding_size)[0], None
        return self.represent(x)

    # -- galleries ---------------------------------------------------------------------
    def enroll(
        self,
        gallery: Any,
        identity: str,
        images: Sequence[ImageInput] | ImageInput,
        metadata: dict[str, Any] | None = None,
    ) -> list[int]:
        """Add the face of each image to ``gallery`` under ``identity``: all images or none.

        Faces go through :meth:`embed_many` (the face policy, the enrolment quality gate),
        so enrolment and search embeddings are comparable.

        Args:
            gallery: an open, writable :class:`~npcface.Gallery`.
            identity: the person's name.
            images: one or more images of that person.
            metadata: merged into the identity's metadata.

        Returns:
            The new template ids, one per image.

        Raises:
            NoFaceError, ImageError, LowQualityError: an image that cannot be enrolled
                (nothing is enrolled then). GalleryError: the gallery belongs to another
                model, or is read-only.
        """
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise InvalidArgumentError(f"no images given to enroll {identity!r}", input="images")
        gallery.check_model(self.info.name, self.info.embedding_size)
        results = self.embed_many(images, min_quality=self.enroll_quality)
        for r in results:
            if not r.ok:
                raise r.error
        sources = [str(x) if isinstance(x, (str, os.PathLike)) else None for x in images]
        return gallery.add(
            identity, np.stack([r.embedding for r in results]), metadata, sources=sources
        )

    def identify(
        self,
        gallery: Any,
        image: ImageInput,
        k: int = 5,
        threshold: float | None = None,
        far: float | None = None,
    ) -> list[Match]:
        """Who is this? The ``k`` most similar identities in ``gallery`` at or above the
        threshold: open-set identification, so a stranger gets an empty list.

        The one identify contract (the CLI, the service and the client follow it): the
        threshold is ``threshold``, or the one calibrated for ``far``, or the model's
        calibrated default (as :meth:`verify`); never both arguments. For the top ``k``
        whatever their similarity, search the gallery with the embedding
        (``gallery.search(rec.embed(img), k)``) or pass ``threshold=-1``.

        Args:
            gallery: an open :class:`~npcface.Gallery` (read-only is fine).
            image: an image, or a (d,) embedding from the same model.
            k: identities to return at most.
            threshold: cosine similarity in [-1, 1]; higher is stricter.
            far: pick the threshold calibrated for this false-accept rate (e.g. 1e-4).

        Returns:
            :class:`~npcface.Match` es, most similar first.

        Raises:
            NoFaceError, ImageError: no usable face. InvalidArgumentError: a threshold that
                is not a cosine, both ``threshold`` and ``far``, or no threshold calibrated
                at ``far``. GalleryError: the gallery belongs to another model.
        """
        limit = self.decision_threshold(threshold, far)
        gallery.check_model(self.info.name, self.info.embedding_size)
        emb = self._embedding_of(image)[0]
        return [m for m in gallery.search(emb, k=k)[0] if m.similarity >= limit]

    def decision_threshold(self, threshold: float | None = None, far: float | None = None) -> float:
        """The threshold a decision uses: ``threshold`` (checked: a cosine in [-1, 1]), or
        the one calibrated for ``far``, or the model's calibrated default.

        Raises:
            InvalidArgumentError: both given; a threshold that is not a cosine; no
                threshold calibrated at ``far``.
        """
        if threshold is not None and far is not None:
            raise InvalidArgumentError(
                "give threshold or far, not both (far picks a calibrated threshold)",
                input="far",
            )
        return check_threshold(threshold) if threshold is not None else self.default_threshold(far)
