"""Aligned crops -> L2-normalised embeddings, batched, with optional flip fusion.

Preprocessing facts (input size, colour order, mean/std) come from the model's
:class:`~npcface.modelinfo.RecognizerInfo`: the ONNX metadata for models we export, the
registry entry for third-party ones. Nothing is guessed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import InvalidArgumentError, ModelError
from .modelinfo import RecognizerInfo, read_onnx_info
from .runtime import Runner, load_runner

log = logging.getLogger(__name__)


class Embedder:
    """Runs a recognition model on aligned crops.

    Args:
        model: registry name (e.g. ``"sface"``) or path to an ``.onnx`` / ``.engine`` file.
        providers: ONNX Runtime providers (None = auto).
        threads: intra-op threads (None = all cores).
        batch_size: crops per inference call.
        backend: "auto" (fastest measured on this machine), "onnxruntime", "opencv",
            "openvino" or "tensorrt".
        info: override the model facts (needed for an ONNX file without npcface metadata).
        typical_batch: crops per call in the expected use (2 for one face with flip fusion);
            ``backend="auto"`` times the engines at this batch (they rank differently: on 2
            cores OpenCV DNN leads at 1 crop, OpenVINO at 2).
        even_batches: every call will be ``embed(..., flip=True)`` (a crop and its mirror,
            so batches are even): OpenVINO builds no model for batch 1 (other batch sizes
            still run, through its dynamic-batch model).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = "sface",
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        backend: str = "auto",
        info: RecognizerInfo | None = None,
        typical_batch: int = 1,
        even_batches: bool = False,
    ) -> None:
        from .models import find_model_spec, resolve_model_file

        key = os.fspath(model)
        spec = find_model_spec(key)
        self.path: Path = resolve_model_file(key)
        info = info or (spec.info if spec else None)
        if info is None and self.path.suffix == ".onnx":
            info = read_onnx_info(str(self.path))
        elif info is None and self.path.suffix == ".engine":
            from .trt_runner import read_engine_info

            info = read_engine_info(self.path)  # the key file written beside the engine
        if info is None:
            raise ModelError(
                f"{self.path} carries no npcface metadata (input size, normalisation); export it "
                "with npcface export, or pass info=RecognizerInfo(...)"
            )
        self.info = _with_calibration(info)
        self.batch_size = int(batch_size)
        s = self.info.input_size
        candidates = spec.backends if spec else ("onnxruntime", "openvino")
        self.runner: Runner = load_runner(
            self.path,
            providers=providers,
            threads=threads,
            backend=backend,
            candidates=candidates,
            sample_shape=(max(int(typical_batch), 1), 3, s, s),
            static_batches=(2,) if even_batches else None,
        )

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def input_size(self) -> int:
        return self.info.input_size

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR -> (N, 3, S, S) float32 in the model's order and scale
        (:func:`preprocess` with this model's facts)."""
        return preprocess(crops, self.info)

    def embed(self, crops: np.ndarray, flip: bool = False) -> np.ndarray:
        """Unit-norm embeddings (N, d) float32 of aligned crops.

        Args:
            crops: (N, S, S, 3) uint8 BGR aligned crops.
            flip: fuse with the mirrored crop (sum of the two unit embeddings, normalised);
                costs a second forward pass, usually gains a little accuracy.
        """
        return embed_crops(self._forward, crops, self.info.embedding_size, self.batch_size, flip)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        x = self.preprocess(x)
        return np.asarray(self.runner.run(x)[0], np.float32).reshape(len(x), -1)


def preprocess(crops: np.ndarray, info: RecognizerInfo) -> np.ndarray:
    """Aligned crops as a model takes them: the one preprocessing of npcface (the SDK's
    embedders, export's parity checks and torch reference, INT8 calibration).

    Args:
        crops: (N, S, S, 3) uint8 BGR aligned crops, S = ``info.input_size``.
        info: the model's facts: channel order, mean and std (per channel, in 0..255 units).

    Returns:
        (N, 3, S, S) float32: ``(x - mean) * (1 / std)`` in the model's channel order.

    Raises:
        InvalidArgumentError: crops of another shape.
    """
    crops = np.asarray(crops)
    s = info.input_size
    if crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
        raise InvalidArgumentError(
            f"{info.name} expects crops of shape (N, {s}, {s}, 3), got {crops.shape}",
            input="crops",
        )
    x = crops[..., ::-1] if info.channel_order == "RGB" else crops
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    if info.mean != (0.0, 0.0, 0.0) or info.std != (1.0, 1.0, 1.0):
        x -= np.asarray(info.mean, np.float32).reshape(1, 3, 1, 1)
        x *= 1.0 / np.asarray(info.std, np.float32).reshape(1, 3, 1, 1)
    return x


def embed_crops(
    forward: Callable[[np.ndarray], np.ndarray],
    crops: np.ndarray,
    embedding_size: int,
    batch_size: int,
    flip: bool = False,
) -> np.ndarray:
    """Unit-norm embeddings of aligned crops through ``forward`` ((B, S, S, 3) uint8 ->
    (B, d)), in batches; ``flip`` fuses with the mirrored crop (sum of the two unit
    embeddings, normalised). Shared by :class:`Embedder` and the export's torch reference,
    so both fuse alike."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if len(crops) == 0:
        return np.zeros((0, embedding_size), np.float32)

    def run(batch: np.ndarray) -> np.ndarray:
        out = [forward(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]
        return _l2(_checked(np.concatenate(out)))

    if not flip:
        return run(crops)
    # one forward pass over crops and mirrors together: for a single face, a batch of 2
    # costs far less than two calls of 1
    both = run(np.concatenate([crops, crops[:, :, ::-1]]))
    n = len(crops)
    return _l2(both[:n] + both[n:])


def _checked(raw: np.ndarray) -> np.ndarray:
    """Raw model outputs, refused when a row is not finite or all zero: such a row has no
    direction, and a score computed from it would be a silent wrong answer."""
    bad = ~np.isfinite(raw).all(axis=1) | ~raw.any(axis=1)
    if bad.any():
        raise ModelError(
            f"the recognition model gave {int(bad.sum())} of {len(raw)} embeddings that are not "
            "finite or all zero: its model file is probably damaged"
        )
    return raw


def _l2(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _with_calibration(info: RecognizerInfo) -> RecognizerInfo:
    """Fill in calibrated thresholds for known models that ship without them."""
    if info.thresholds:
        return info
    from .calibration import CALIBRATED

    cal = CALIBRATED.get(info.name)
    if cal is None:
        return info
    from dataclasses import replace

    return replace(info, thresholds=dict(cal["thresholds"]), threshold_source=cal["source"])
