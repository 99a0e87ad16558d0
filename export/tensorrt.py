"""ONNX -> TensorRT engine, keyed so that a mismatched engine is rebuilt or refused, never run.

:func:`build_engine` parses the ONNX file with the TensorRT Python API into an
explicit-batch network, adds one optimisation profile (min / opt / max batch, with opt at
the typical batch, not 1), builds fp32, fp16 or INT8 (implicit INT8 with an entropy
calibrator over aligned crops, or explicit INT8 from a QDQ ONNX file made by
``npcface export quantize --int8``), reuses a timing cache, and writes the engine with a
key file (:class:`npcface.trt_runner.EngineKey`: TensorRT version, GPU compute capability,
precision, profile, input size, the ONNX file's SHA-256 and, for INT8 calibrated from crops,
the calibration data's SHA-256). An engine whose key matches is reused; one whose key
differs is rebuilt. The INT8 calibration cache is keyed the same way (ONNX file,
calibration data, TensorRT version), so another calibration set never reuses it. :class:`npcface.trt_runner.TensorRTRunner`
refuses to run an engine whose key does not match the running TensorRT and GPU.

UNVERIFIED: this machine and CI have no GPU and no TensorRT. The code follows the
TensorRT 10 Python API documentation; only argument handling, cache keys and the errors
for a missing TensorRT or GPU are tested here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npcface.errors import ModelError
from npcface.fsutil import atomic_path
from npcface.modelinfo import RecognizerInfo, read_onnx_info
from npcface.trt_runner import (
    EngineKey,
    check_precision_and_profile,
    cuda_device,
    engine_file_name,
    import_cuda_driver,
    import_tensorrt,
    read_engine_meta,
    write_engine_meta,
)

from .crops import preprocess_crops
from .onnx import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorRTBuildConfig:
    """How to build an engine.

    Attributes:
        precision: "fp32", "fp16" or "int8" (INT8 also enables fp16 for layers that stay
            in floating point).
        min_batch: smallest batch the engine accepts.
        opt_batch: the batch the kernels are tuned for: the typical batch of the
            deployment (the embedder's default is 32), not 1.
        max_batch: largest batch the engine accepts (larger batches are split by the runner).
        workspace_mb: builder workspace memory limit.
        timing_cache: timing cache file (None: ``<cache dir>/timing-trt<version>-sm<cc>.cache``).
        calibration_batch: crops per INT8 calibration batch.
    """

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 64
    workspace_mb: int = 2048
    timing_cache: Path | None = None
    calibration_batch: int = 32

    def __post_init__(self) -> None:
        check_precision_and_profile(self.precision, self.min_batch, self.opt_batch, self.max_batch)
        if self.workspace_mb <= 0 or self.calibration_batch <= 0:
            raise ValueError("workspace_mb and calibration_batch must be positive")

    @property
    def profile(self) -> tuple[int, int, int]:
        return (self.min_batch, self.opt_batch, self.max_batch)


def parse_profile(text: str) -> tuple[int, int, int]:
    """``"1,32,64"`` (or ``1:32:64``) -> (1, 32, 64); validated.

    Raises:
        ValueError: not three positive integers with min <= opt <= max.
    """
    parts = text.replace(":", ",").split(",")
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"a batch profile is MIN,OPT,MAX (e.g. 1,32,64), not {text!r}") from None
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"the batch profile needs 1 <= min <= opt <= max, got {text!r}")
    return lo, opt, hi


def _load_graph(path: str | os.PathLike[str]) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise ModelError(f"{path} is not a readable ONNX file: {exc}") from exc


def has_qdq(path: str | os.PathLike[str]) -> bool:
    """Does the ONNX file carry QuantizeLinear/DequantizeLinear (explicit INT8)?"""
    graph = _load_graph(path)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)


def input_size_of(path: str | os.PathLike[str], info: RecognizerInfo | None) -> int:
    """Input side S from the metadata, else from the graph's (N, 3, S, S) input."""
    if info is not None:
        return info.input_size
    dims = _load_graph(path).input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].dim_value and dims[2].dim_value == dims[3].dim_value:
        return int(dims[2].dim_value)
    raise ModelError(f"cannot tell the input size of {path}; it carries no npcface metadata")


def calibration_sha256(crops: np.ndarray, info: RecognizerInfo, batch: int) -> str:
    """SHA-256 of what INT8 calibration sees: the crops (shape and bytes), their
    preprocessing (channel order, mean, std) and the calibration batch size."""
    import hashlib

    crops = np.ascontiguousarray(crops)
    h = hashlib.sha256()
    head = {
        "shape": list(crops.shape),
        "dtype": str(crops.dtype),
        "channel_order": info.channel_order,
        "mean": list(info.mean),
        "std": list(info.std),
        "batch": int(batch),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(memoryview(crops).cast("B"))
    return h.hexdigest()


def calibration_cache_path(cache_dir: str | os.PathLike[str], key: EngineKey) -> Path:
    """The INT8 calibration cache of an engine key: per ONNX file, calibration data and
    TensorRT version, so another calibration set or TensorRT release never reads it."""
    return Path(cache_dir) / (
        f"calib-{key.onnx_sha256[:16]}-{key.calibration_sha256[:16]}"
        f"-trt{key.tensorrt_version}.cache"
    )


def make_engine_key(
    onnx_path: str | os.PathLike[str],
    config: TensorRTBuildConfig,
    tensorrt_version: str,
    compute_capability: str,
    input_size: int,
    onnx_sha256: str | None = None,
    calibration: str = "",
) -> EngineKey:
    """The key of the engine that ``config`` would build from ``onnx_path`` on this target;
    ``calibration``: :func:`calibration_sha256` of the INT8 calibration data ("" when the
    engine is not calibrated from crops)."""
    return EngineKey(
        tensorrt_version=tensorrt_version,
        compute_capability=compute_capability,
        precision=config.precision,
        min_batch=config.min_batch,
        opt_batch=config.opt_batch,
        max_batch=config.max_batch,
        input_size=int(input_size),
        onnx_sha256=onnx_sha256 or file_sha256(onnx_path),
        calibration_sha256=calibration,
    )


def engine_output_path(
    onnx_path: str | os.PathLike[str], output: str | os.PathLike[str] | None, key: EngineKey
) -> Path:
    """Where the engine goes: ``output`` when it names a file, else a keyed name in the
    folder ``output`` (default: next to the ONNX file)."""
    onnx_path = Path(onnx_path)
    if output is not None and Path(output).suffix == ".engine":
        return Path(output)
    folder = Path(output) if output is not None else onnx_path.parent
    return folder / engine_file_name(onnx_path.stem, key)


def reusable(engine: Path, key: EngineKey) -> bool:
    """True when ``engine`` exists with a key file equal to ``key`` (else it must be rebuilt)."""
    if not engine.is_file():
        return False
    try:
        stored, _ = read_engine_meta(engine)
    except ModelError as exc:
        log.warning("%s: %s; rebuilding", engine, exc)
        return False
    if stored != key:
        log.warning(
            "%s was built for another target (%s); rebuilding",
            engine,
            "; ".join(stored.mismatches(key)),
        )
        return False
    return True


def _calibrator(trt: Any, crops: np.ndarray, info: RecognizerInfo, batch: int, cache: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` over preprocessed aligned crops (needs pycuda)."""
    cuda = import_cuda_driver()
    data = preprocess_crops(crops, info)

    class CropCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.device = cuda.mem_alloc(data[:batch].nbytes)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index + batch > len(data):
                return None
            chunk = np.ascontiguousarray(data[self.index : self.index + batch])
            cuda.memcpy_htod(self.device, chunk)
            self.index += batch
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, blob: bytes) -> None:
            cache.write_bytes(bytes(blob))

    if len(data) < batch:
        raise ValueError(f"INT8 calibration needs at least {batch} crops, got {len(data)}")
    return CropCalibrator()


def build_engine(
    onnx_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    config: TensorRTBuildConfig | None = None,
    *,
    calib_crops: np.ndarray | None = None,
    info: RecognizerInfo | None = None,
    rebuild: bool = False,
    device: int = 0,
) -> Path:
    """Build (or reuse) a TensorRT engine for an ONNX recogniser.

    Args:
        onnx_path: the ONNX file (dynamic batch, ideally exported by npcface).
        output: engine file (``.engine``) or folder; default: a keyed name next to the ONNX.
        config: precision, batch profile, workspace, timing cache.
        calib_crops: aligned crops for implicit INT8 calibration (not needed when the ONNX
            file is already QDQ-quantised).
        info: model facts when the ONNX file has no npcface metadata.
        rebuild: build even when a matching engine exists.
        device: CUDA device.

    Returns:
        The engine path (its key file is ``<engine>.json``).

    Raises:
        MissingExtraError: tensorrt or pycuda is not installed.
        ProviderError: no CUDA GPU.
        ValueError: INT8 without calibration crops or QDQ nodes; bad profile.
        ModelError: TensorRT cannot parse the ONNX file or build the engine.
    """
    config = config or TensorRTBuildConfig()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelError(f"ONNX file {onnx_path} does not exist")
    explicit_int8 = has_qdq(onnx_path)  # also: ModelError for an unreadable file
    info = info or read_onnx_info(str(onnx_path))
    size = input_size_of(onnx_path, info)
    if config.precision == "int8" and calib_crops is None and not explicit_int8:
        raise ValueError(
            "INT8 engines need calibration crops (--calib DIR) or a QDQ-quantised ONNX file "
            "(npcface export quantize --int8)"
        )
    if config.precision == "int8" and calib_crops is not None and info is None:
        raise ModelError(
            f"{onnx_path} has no npcface metadata: cannot preprocess calibration crops"
        )

    trt = import_tensorrt()
    cuda = import_cuda_driver()
    _, capability = cuda_device(cuda, device)
    calibrated = config.precision == "int8" and not explicit_int8
    calib = calibration_sha256(calib_crops, info, config.calibration_batch) if calibrated else ""
    key = make_engine_key(onnx_path, config, trt.__version__, capability, size, calibration=calib)
    engine_path = engine_output_path(onnx_path, output, key)
    if not rebuild and reusable(engine_path, key):
        log.info("reusing %s (key %s)", engine_path, key.digest())
        return engine_path

    from npcface.models import npcface_home

    cache_dir = npcface_home() / "trt-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    timing_path = (
        config.timing_cache or cache_dir / f"timing-trt{trt.__version__}-sm{capability}.cache"
    )

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode from 10 on
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {errors}")
    if network.num_inputs != 1:
        raise ModelError(f"{onnx_path} has {network.num_inputs} inputs; a recogniser has one")
    inp = network.get_input(0)

    bconf = builder.create_builder_config()
    bconf.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mb << 20)
    profile = builder.create_optimization_profile()
    shapes = [(b, 3, size, size) for b in config.profile]
    profile.set_shape(inp.name, *shapes)
    bconf.add_optimization_profile(profile)
    if config.precision in ("fp16", "int8"):
        bconf.set_flag(trt.BuilderFlag.FP16)
    if config.precision == "int8":
        bconf.set_flag(trt.BuilderFlag.INT8)
        if not explicit_int8:
            calib_cache = calibration_cache_path(cache_dir, key)
            bconf.int8_calibrator = _calibrator(
                trt, calib_crops, info, config.calibration_batch, calib_cache
            )
            calib_profile = builder.create_optimization_profile()
            calib_shape = (config.calibration_batch, 3, size, size)
            calib_profile.set_shape(inp.name, calib_shape, calib_shape, calib_shape)
            bconf.set_calibration_profile(calib_profile)
    blob = timing_path.read_bytes() if timing_path.is_file() else b""
    timing = bconf.create_timing_cache(blob)
    bconf.set_timing_cache(timing, ignore_mismatch=False)

    log.info(
        "building %s engine for %s (profile %s)", config.precision, onnx_path.name, config.profile
    )
    serialized = builder.build_serialized_network(network, bconf)
    if serialized is None:
        raise ModelError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    _atomic_write(timing_path, lambda f: f.write(memoryview(bconf.get_timing_cache().serialize())))
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(engine_path, lambda f: f.write(memoryview(serialized)))
    write_engine_meta(engine_path, key, info)
    log.info("wrote %s (key %s)", engine_path, key.digest())
    return engine_path


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
