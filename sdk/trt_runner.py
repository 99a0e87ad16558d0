"""Run serialized TensorRT engines (``.engine`` files) built by ``npcface export tensorrt``.

An engine is only valid for the TensorRT version and GPU architecture (compute capability)
that built it, for the precision and batch profile it was built with, and for the ONNX file
it came from. Every engine npcface writes has a key file next to it (``model.engine.json``)
holding an :class:`EngineKey` and the model's :class:`~npcface.modelinfo.RecognizerInfo`.
:class:`TensorRTRunner` compares the key with the running TensorRT and GPU and refuses a
mismatched or unkeyed engine with the command that rebuilds it: a stale engine is never run.

TensorRT and a CUDA driver binding (``pycuda``) are imported lazily, only when an engine
is loaded: ``pip install 'npcface[tensorrt]'``. Without a CUDA GPU, loading raises
:class:`~npcface.errors.ProviderError`.

Unverified here: the code that talks to TensorRT and CUDA has been written against the
TensorRT 10 Python API but has never run on a GPU in this project's CI (no GPU). The key
handling and the error paths are tested.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, MissingExtraError, ModelError, ProviderError
from .fsutil import atomic_write_text
from .modelinfo import RecognizerInfo

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
KEY_SCHEMA = 1


def check_precision_and_profile(
    precision: str, min_batch: int, opt_batch: int, max_batch: int
) -> None:
    """Raise ValueError unless ``precision`` is known and 1 <= min <= opt <= max."""
    if precision not in PRECISIONS:
        raise InvalidArgumentError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}"
        )
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise InvalidArgumentError(
            f"the batch profile needs 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}"
        )


@dataclass(frozen=True)
class EngineKey:
    """Everything a TensorRT engine depends on; an engine runs only where its key matches.

    Attributes:
        tensorrt_version: ``tensorrt.__version__`` of the builder, e.g. "10.3.0".
        compute_capability: GPU architecture of the builder as "major.minor", e.g. "8.6".
        precision: "fp32", "fp16" or "int8".
        min_batch: smallest batch of the optimisation profile.
        opt_batch: batch the kernels were tuned for (the typical batch, not 1).
        max_batch: largest batch of the profile.
        input_size: side S of the (batch, 3, S, S) input.
        onnx_sha256: SHA-256 of the ONNX file the engine was built from.
        calibration_sha256: SHA-256 of the INT8 calibration data (crops and their
            preprocessing) for implicitly calibrated INT8 engines; "" otherwise.
    """

    tensorrt_version: str
    compute_capability: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    input_size: int
    onnx_sha256: str
    calibration_sha256: str = ""

    def __post_init__(self) -> None:
        check_precision_and_profile(self.precision, self.min_batch, self.opt_batch, self.max_batch)
        if self.input_size <= 0:
            raise InvalidArgumentError(f"input_size must be positive, got {self.input_size}")

    @property
    def profile(self) -> tuple[int, int, int]:
        """(min, opt, max) batch."""
        return (self.min_batch, self.opt_batch, self.max_batch)

    def digest(self, length: int = 16) -> str:
        """A short stable hash of every field (used in engine file names); an empty
        ``calibration_sha256`` is left out, so keys of uncalibrated engines keep the digest
        they had before the field existed."""
        fields = asdict(self)
        if not fields["calibration_sha256"]:
            del fields["calibration_sha256"]
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    def mismatches(self, other: EngineKey) -> list[str]:
        """Human-readable differences from ``other`` ("field: ours != theirs")."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: {mine[k]} != {theirs[k]}" for k in mine if mine[k] != theirs[k]]

    def runtime_mismatches(self, tensorrt_version: str, compute_capability: str) -> list[str]:
        """Why this engine cannot run under ``tensorrt_version`` on a GPU of ``compute_capability``.

        TensorRT engines are not portable across TensorRT versions (any version change, even
        a patch release, is refused: NVIDIA guarantees nothing else without version
        compatibility mode) nor across GPU architectures.
        """
        problems = []
        if self.tensorrt_version != tensorrt_version:
            problems.append(
                f"built with TensorRT {self.tensorrt_version}, running TensorRT {tensorrt_version}"
            )
        if self.compute_capability != compute_capability:
            problems.append(
                f"built for compute capability {self.compute_capability}, "
                f"this GPU has {compute_capability}"
            )
        return problems


def engine_file_name(stem: str, key: EngineKey) -> str:
    """File name of an engine: ``<stem>.<precision>.b<min>-<opt>-<max>.<key digest>.engine``."""
    return f"{stem}.{key.precision}.b{key.min_batch}-{key.opt_batch}-{key.max_batch}.{key.digest()}.engine"


def key_file(engine_path: str | os.PathLike[str]) -> Path:
    """The key file next to an engine: ``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_engine_meta(
    engine_path: str | os.PathLike[str], key: EngineKey, info: RecognizerInfo | None
) -> Path:
    """Write the key file of ``engine_path`` (key, model facts); returns its path."""
    from .models import sha256_file

    path = key_file(engine_path)
    doc = {
        "schema": KEY_SCHEMA,
        "key": asdict(key),
        "digest": key.digest(),
        "info": json.loads(info.to_json()) if info else None,
        # the engine as written: checked on load, so a damaged engine is never run
        "engine_sha256": sha256_file(engine_path) if Path(engine_path).is_file() else None,
    }
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True))
    return path


def read_engine_meta(
    engine_path: str | os.PathLike[str],
) -> tuple[EngineKey, RecognizerInfo | None]:
    """The :class:`EngineKey` and model facts stored next to an engine.

    Raises:
        ModelError: the key file is missing or unreadable (an unkeyed engine is never run).
    """
    path = key_file(engine_path)
    try:
        doc = json.loads(path.read_text())
        if int(doc.get("schema", KEY_SCHEMA)) > KEY_SCHEMA:
            raise ModelError(f"key schema {doc['schema']} is newer than this npcface reads")
        key = EngineKey(**doc["key"])
        info = RecognizerInfo.from_json(json.dumps(doc["info"])) if doc.get("info") else None
        recorded = doc.get("engine_sha256")
    except FileNotFoundError:
        raise ModelError(
            f"{engine_path} has no key file {path.name}: npcface runs only engines whose "
            "TensorRT version, GPU and source are known; rebuild it with "
            "'npcface export tensorrt MODEL.onnx'"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"cannot read the engine key file {path}: {exc}") from exc
    if recorded and Path(engine_path).is_file():
        from .models import sha256_file

        if sha256_file(engine_path) != recorded:
            raise ModelError(
                f"{engine_path} differs from the engine recorded in {path.name} when it was "
                "built (damaged or replaced); rebuild it with 'npcface export tensorrt MODEL.onnx'"
            )
    return key, info


def read_engine_info(engine_path: str | os.PathLike[str]) -> RecognizerInfo | None:
    """The :class:`RecognizerInfo` stored with an engine (None when it has none)."""
    return read_engine_meta(engine_path)[1]


def import_tensorrt() -> Any:
    """``import tensorrt``, or :class:`MissingExtraError` naming the extra."""
    try:
        import tensorrt
    except ImportError:
        raise MissingExtraError("TensorRT engines", "tensorrt", "tensorrt") from None
    return tensorrt


def import_cuda_driver() -> Any:
    """``pycuda.driver``, or :class:`MissingExtraError` naming the extra."""
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise MissingExtraError("TensorRT engines", "tensorrt", "pycuda") from None
    return cuda


def cuda_device(cuda: Any, device: int = 0) -> tuple[Any, str]:
    """The CUDA device ``device`` and its compute capability "major.minor".

    Raises:
        ProviderError: the driver cannot initialise or there is no such GPU.
    """
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # pycuda raises its own LogicError/RuntimeError types
        raise ProviderError(
            f"TensorRT needs a CUDA GPU, but the CUDA driver could not start: {exc}; "
            "run the ONNX model on the CPU instead (backend='onnxruntime')"
        ) from exc
    if count <= device:
        raise ProviderError(
            f"TensorRT needs a CUDA GPU, but this machine has {count} (asked for device "
            f"{device}); run the ONNX model on the CPU instead (backend='onnxruntime')"
        )
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return dev, f"{major}.{minor}"


class TensorRTRunner:
    """A deserialized TensorRT engine with one input (batch, 3, S, S) and its first output.

    Batches larger than the engine's profile maximum are split; smaller than its minimum
    are padded. Implements the :class:`npcface.runtime.Runner` protocol.

    Args:
        path: ``.engine`` file written by ``npcface export tensorrt`` (with its key file).
        device: CUDA device index.

    Raises:
        MissingExtraError: tensorrt or pycuda is not installed.
        ProviderError: no CUDA GPU.
        ModelError: the engine is missing, unkeyed, or was built for another TensorRT
            version or GPU (rebuild it), or TensorRT cannot deserialize it.
    """

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], device: int = 0) -> None:
        trt = import_tensorrt()
        cuda = import_cuda_driver()
        dev, capability = cuda_device(cuda, device)
        self.path = Path(path)
        # one execution context, stream and set of device buffers: calls take turns
        self._lock = threading.Lock()
        if not self.path.is_file():
            raise ModelError(f"TensorRT engine {self.path} does not exist")
        self.key, self.info = read_engine_meta(self.path)
        problems = self.key.runtime_mismatches(trt.__version__, capability)
        if problems:
            raise ModelError(
                f"refusing to run {self.path}: {'; '.join(problems)}. Rebuild it here with "
                "'npcface export tensorrt MODEL.onnx' (engines are not portable)"
            )
        self._cuda = cuda
        self._ctx = dev.retain_primary_context()
        self._ctx.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ModelError(f"TensorRT could not deserialize {self.path}")
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if n not in inputs]
            if len(inputs) != 1 or not outputs:
                raise ModelError(
                    f"{self.path}: expected one input and at least one output, got "
                    f"inputs {inputs} and outputs {outputs}"
                )
            self.input_name, self.output_names = inputs[0], outputs
            self._stream = cuda.Stream()
            self._buffers: dict[str, tuple[int, Any]] = {}
        finally:
            self._ctx.pop()
        self.providers = (f"tensorrt-{trt.__version__}-sm{capability}",)
        log.info("loaded TensorRT engine %s (%s)", self.path.name, self.key)

    def _device_buffer(self, name: str, nbytes: int) -> Any:
        have = self._buffers.get(name)
        if have is None or have[0] < nbytes:
            have = (nbytes, self._cuda.mem_alloc(nbytes))
            self._buffers[name] = have
        return have[1]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for a float32 (N, 3, S, S) batch, in the engine's output order."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        s = self.key.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, s, s):
            raise InvalidArgumentError(
                f"{self.path.name} expects (N, 3, {s}, {s}) input, got {batch.shape}"
            )
        lo, hi = self.key.min_batch, self.key.max_batch
        parts = []
        for i in range(0, len(batch), hi):
            chunk = batch[i : i + hi]
            n = len(chunk)
            if n < lo:
                chunk = np.concatenate([chunk, np.zeros((lo - n, *chunk.shape[1:]), np.float32)])
            outs = self._run_chunk(chunk)
            parts.append([o[:n] for o in outs])
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]

    def _run_chunk(self, chunk: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            return self._run_chunk_locked(chunk)

    def _run_chunk_locked(self, chunk: np.ndarray) -> list[np.ndarray]:
        cuda = self._cuda
        self._ctx.push()
        try:
            if not self.context.set_input_shape(self.input_name, chunk.shape):
                raise ModelError(f"{self.path.name} rejects input shape {chunk.shape}")
            d_in = self._device_buffer(self.input_name, chunk.nbytes)
            cuda.memcpy_htod_async(d_in, chunk, self._stream)
            self.context.set_tensor_address(self.input_name, int(d_in))
            hosts = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                host = cuda.pagelocked_empty(shape, dtype=np.float32)
                d_out = self._device_buffer(name, host.nbytes)
                self.context.set_tensor_address(name, int(d_out))
                hosts.append((host, d_out))
            if not self.context.execute_async_v3(self._stream.handle):
                raise ModelError(f"TensorRT failed to run {self.path.name}")
            for host, d_out in hosts:
                cuda.memcpy_dtoh_async(host, d_out, self._stream)
            self._stream.synchronize()
            return [np.array(h) for h, _ in hosts]
        finally:
            self._ctx.pop()
