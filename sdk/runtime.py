"""The one place that knows inference engines: ONNX Runtime providers, OpenCV DNN, TensorRT.

Every :class:`Runner` may be called from many threads at once. ONNX Runtime sessions are
thread-safe as they are. An OpenVINO infer request and an OpenCV ``Net`` hold their input and
output buffers, so they are not: those runners keep a pool of them and lend one to each
concurrent call (:class:`_Pool`), so no call ever sees another call's buffers.

Detectors and embedders ask :func:`load_runner` for a :class:`Runner` and never touch an
engine directly. Provider choice with ``providers=None`` ("auto"): TensorRT, then CUDA, then
CPU, whichever is installed and actually loads; the choice is logged. When the caller names
a GPU provider and it is not available, :class:`ProviderError` is raised: never a silent
fall-back to CPU.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from .errors import ModelError, ProviderError
from .fsutil import atomic_write_text

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})


T = TypeVar("T")


class _Pool(Generic[T]):
    """Objects that serve one call at a time (OpenVINO infer requests, OpenCV nets), lent to
    concurrent callers: a free one if there is one, else a new one from ``make``. The pool
    grows to the peak concurrency and keeps what it made."""

    def __init__(self, make: Callable[[], T], first: T | None = None) -> None:
        self._make = make
        self._free: queue.SimpleQueue[T] = queue.SimpleQueue()
        if first is not None:
            self._free.put(first)

    @contextmanager
    def lend(self) -> Iterator[T]:
        try:
            item = self._free.get_nowait()
        except queue.Empty:
            item = self._make()
        try:
            yield item
        finally:
            self._free.put(item)


class Runner(Protocol):
    """A loaded model: one float32 NCHW input batch in, the first output out. Safe to call
    from many threads at once."""

    backend: str
    providers: tuple[str, ...]

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def normalize_providers(providers: str | Sequence[str] | None) -> list[str] | None:
    """Expand aliases ("cpu", "cuda", "tensorrt") to ONNX Runtime provider names."""
    if providers is None or providers == "auto":
        return None
    if isinstance(providers, str):
        providers = [providers]
    return [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]


def choose_providers(requested: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Pure provider choice (tested on CPU).

    Args:
        requested: None/"auto" for the best available, or explicit names/aliases.
        available: what ``onnxruntime.get_available_providers()`` reports.

    Returns:
        The provider list to hand to ONNX Runtime, best first, CPU always last.

    Raises:
        ProviderError: an explicitly requested provider is not available.
    """
    wanted = normalize_providers(requested)
    if wanted is None:
        chosen = [p for p in AUTO_ORDER if p in available]
        return chosen or ["CPUExecutionProvider"]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise ProviderError(
            f"execution provider(s) {', '.join(missing)} requested but this ONNX Runtime has only "
            f"{', '.join(available)}; "
            + (
                shadowed_gpu_runtime()
                or "install 'npcface[gpu]' (onnxruntime-gpu) or ask for 'cpu'"
            )
        )
    if "CPUExecutionProvider" not in wanted and not (set(wanted) & GPU_PROVIDERS):
        wanted.append("CPUExecutionProvider")
    return wanted


class OrtRunner:
    """An ONNX Runtime session.

    Args:
        path: ONNX file.
        providers: ONNX Runtime providers (see :func:`choose_providers`).
        threads: intra-op threads (None = all cores).
        varying_input: True when the input's height and width change from call to call (a
            detector): the session keeps no memory pattern per shape. None reads it from the
            model's inputs, at the cost of building the session twice when they vary.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        providers: str | Sequence[str] | None = None,
        threads: int | None = None,
        varying_input: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        chosen = choose_providers(providers, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        # ONNX Runtime's pool spins for a while after each run by default, waiting for the
        # next one. In a pipeline the next step is other work (alignment, the recogniser in
        # OpenVINO, another request's thread), which the spinning threads starve: measured
        # on 2 cores, an OpenVINO SFace pass right after a YuNet pass took 13.6 ms with
        # spinning and 7.2 ms without, for +0.6 ms on YuNet (bench/pipeline_vs_opencv.py
        # --stages shows the same in the whole pipeline).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        provider_options = [_provider_options(p, path) for p in chosen]
        # ONNX Runtime keeps a memory pattern per input shape, without bound: a detector fed
        # photos of every size would grow without end (measured: +430 MB over 40 sizes of
        # 6-12 MP, flat without; bench/memory_soak.py). A caller that knows (a detector) says
        # so and the session is built once; otherwise the first session's inputs tell.
        if varying_input:
            opts.enable_mem_pattern = False
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=chosen, provider_options=provider_options
            )
            if varying_input is None and _varying_input_size(self.session):
                opts.enable_mem_pattern = False
                self.session = ort.InferenceSession(
                    str(path),
                    sess_options=opts,
                    providers=chosen,
                    provider_options=provider_options,
                )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"ONNX Runtime could not load {path}: {exc}") from exc
        got = tuple(self.session.get_providers())
        asked_gpu = normalize_providers(providers) is not None and set(chosen) & GPU_PROVIDERS
        if asked_gpu and not set(got) & GPU_PROVIDERS:
            raise ProviderError(
                f"asked for {', '.join(chosen)} but ONNX Runtime loaded {path} on {', '.join(got)}"
            )
        self.providers = got
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape)
        log.info("loaded %s with ONNX Runtime on %s", Path(path).name, ", ".join(got))

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: batch})


def _varying_input_size(session: object) -> bool:
    """True when an input has a symbolic size beyond the batch axis (a detector's height
    and width); a batch axis alone takes few distinct values."""
    return any(
        any(not isinstance(d, int) for d in inp.shape[1:])
        for inp in session.get_inputs()  # type: ignore[attr-defined]
    )


def _provider_options(provider: str, path: str | os.PathLike[str]) -> dict[str, str]:
    if provider == "TensorrtExecutionProvider":
        from .models import npcface_home

        cache = npcface_home() / "trt-cache"
        cache.mkdir(parents=True, exist_ok=True)
        return {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_fp16_enable": "True",
        }
    return {}


class OpenCVRunner:
    """OpenCV DNN on the CPU (used where it measures faster than ONNX Runtime).

    A ``cv2.dnn.Net`` keeps its input between ``setInput`` and ``forward``: each concurrent
    call gets a net of its own from a pool (one more copy of the weights per extra thread).
    """

    backend = "opencv"
    providers = ("opencv-cpu",)

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        import cv2

        self.path = str(path)
        if threads:
            cv2.setNumThreads(int(threads))
        self._nets = _Pool(self._load, first=self._load())

    def _load(self) -> object:
        import cv2

        try:
            return cv2.dnn.readNetFromONNX(self.path)
        except cv2.error as exc:
            raise ModelError(f"OpenCV DNN could not load {self.path}: {exc}") from exc

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._nets.lend() as net:
            net.setInput(np.ascontiguousarray(batch))
            return [np.array(net.forward(), copy=True)]


STATIC_BATCHES = (1, 2)
"""Batch sizes that OpenVINO runs through a model compiled for exactly that shape, when only
the batch axis of the input varies (a recogniser): one photo's face, and a face with its
mirror for flip fusion (a caller whose batches are all even, flip fusion's, asks for 2 only:
each model compiled costs every start 0.03-0.06 s). Measured on 2 cores (SFace INT8,
interleaved, 300 calls each): batch 1 9.14 -> 8.04 ms, batch 2 15.12 -> 14.13 ms against
the dynamic-batch model, with identical outputs. They are compiled with the runner, never on first use: a compilation
beside another thread's inference hung 1 start in 14 of 8 threads sharing a fresh recogniser."""

OPENVINO_CACHE = "openvino-cache"
"""Folder under the npcface cache where OpenVINO keeps compiled models: a cold start then
loads them instead of compiling again (SFace INT8 here: 0.29 -> 0.09 s per model). One
sub-folder per model file content (the first 16 hex digits of its SHA-256), because the
models are compiled from their paths: on a hit OpenVINO then loads the compiled blob without
reading or hashing the model (compiling from a model object hashes it in full: 0.04-0.06 s
against 0.03 s from the path, plus 0.03-0.05 s to read it), but it keys a path's blob by the
path alone, so a file rewritten in place (a model exported again under the same name)
would otherwise get the old file's compiled model."""


_OPENVINO_FIRST_CALLS = threading.Lock()
"""Every :class:`OpenVINORunner`'s first call runs under this lock, one at a time in the
process. OpenVINO's Python binding fills function-local statics on first use (pybind11's
handle on numpy's C API among them) and can give up the GIL inside one; a second thread that
then takes the GIL and reaches the same static waits for it while holding the GIL, and the
first never gets the GIL back. Seen with 8 threads sharing a fresh recogniser: 1 start in
14 hung for good (native stacks: one thread in ``__cxa_guard_acquire`` under the GIL, the
other inside that static waiting for the GIL)."""


class OpenVINORunner:
    """OpenVINO on the CPU (optional; used where it measures fastest).

    Args:
        path: ONNX file (dynamic batch allowed).
        threads: inference threads (None = OpenVINO's choice, all cores).
        precision: "f32" (default: same numbers as the ONNX graph) or "bf16" (faster on CPUs
            with AVX512-BF16/AMX, embeddings within about 1e-3 cosine).
        static_batches: batch sizes that get a model of their own (see
            :data:`STATIC_BATCHES`); other sizes run through the dynamic-batch model.
    """

    backend = "openvino"
    providers = ("openvino-cpu",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        precision: str = "f32",
        static_batches: Sequence[int] = STATIC_BATCHES,
    ) -> None:
        try:
            ov = import_openvino()
        except ImportError as exc:
            raise ModelError("OpenVINO is not installed (pip install openvino)") from exc
        config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
            # OpenVINO pins its inference threads to cores, the same ones in every process:
            # two 1-thread enrolment workers shared one core (each at ~55 % of a core, 2x
            # slower than unpinned, measured on 2 cores). A caller that sets the threads
            # shares the machine, so let the OS place them.
            config["ENABLE_CPU_PINNING"] = False
        self._path = str(path)
        cache = _openvino_cache_dir(self._path)
        config["CACHE_DIR"] = str(cache) if cache else ""
        try:
            core = ov.Core()
            # from the path when the cache is on (see OPENVINO_CACHE): a hit reads nothing
            source = self._path if cache else core.read_model(self._path)
            self.compiled = core.compile_model(source, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ModelError(f"OpenVINO could not load {path}: {exc}") from exc
        # One infer request serves one call at a time ("Infer Request is busy" otherwise, or
        # worse, another call's outputs): a pool lends one to each concurrent call.
        self._requests = _Pool(
            self.compiled.create_infer_request, first=self.compiled.create_infer_request()
        )
        self._by_batch = self._static_models(core, config, cache, tuple(static_batches))
        self._called = False

    def _static_models(
        self, core: Any, config: dict[str, object], cache: Path | None, sizes: tuple[int, ...]
    ) -> dict[int, _Pool[Any]]:
        """Request pools of the models compiled for the batch ``sizes``, where nothing but the
        batch axis varies; all compiled now.
        With the cache on, each static model is saved once beside the compiled blobs
        (OpenVINO IR, weights as they are) and compiled from that path."""
        shape = self.compiled.inputs[0].get_partial_shape()
        if not (shape.rank.is_static and all(d.is_static for d in list(shape)[1:])):
            return {}
        pools: dict[int, _Pool[Any]] = {}
        source = None
        for n in sizes:
            try:
                if cache is not None:
                    variant = cache / f"batch{n}.xml"
                    if not variant.is_file():
                        source = source or core.read_model(self._path)
                        _save_model(_with_batch(source, n), variant)
                    compiled = core.compile_model(str(variant), "CPU", config)
                else:
                    source = source or core.read_model(self._path)
                    compiled = core.compile_model(_with_batch(source, n), "CPU", config)
            except Exception as exc:  # noqa: BLE001 - the dynamic model still works
                log.warning("OpenVINO: no static model for batch %d (%s)", n, exc)
                return {}
            pools[n] = _Pool(compiled.create_infer_request, first=compiled.create_infer_request())
        return pools

    def _pool_for(self, n: int) -> _Pool[Any]:
        """The request pool of the model to run a batch of ``n`` through."""
        return self._by_batch.get(n, self._requests)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self._called:
            with _OPENVINO_FIRST_CALLS:
                out = self._infer(batch)
                self._called = True
                return out
        return self._infer(batch)

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._pool_for(len(batch)).lend() as request:
            result = request.infer({0: np.ascontiguousarray(batch)})
            # the request reuses its output buffers on the next call: copy out while we hold it
            return [np.array(v, copy=True) for v in result.values()]


_OPENVINO_IMPORT = threading.Lock()


def import_openvino() -> Any:
    """``import openvino`` without its model converter, which npcface never uses.

    ``import openvino`` also imports ``openvino.tools.ovc`` (the converter), and that starts
    OpenVINO's telemetry; it cost 0.15 s of a 1.0 s ``npcface verify`` (measured against the
    plain import, both under load on 2 cores; CPU: 0.06 s importing it, 0.08 s at exit). The
    converter is held back while OpenVINO imports and stays importable:
    ``openvino.convert_model`` (also ``from openvino import convert_model``) imports it on
    first use. When OpenVINO is imported already, that module is returned as it is.

    Raises:
        ImportError: OpenVINO is not installed.
    """
    with _OPENVINO_IMPORT:
        if "openvino" in sys.modules:
            return sys.modules["openvino"]
        held = "openvino.tools.ovc" not in sys.modules
        if held:
            sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]
        try:
            import openvino
        finally:
            if held:
                del sys.modules["openvino.tools.ovc"]
        if held and not hasattr(openvino, "convert_model") and not hasattr(openvino, "__getattr__"):
            openvino.__getattr__ = _converter_on_first_use  # PEP 562
        return openvino


def _converter_on_first_use(name: str) -> Any:
    if name == "convert_model":
        from openvino.tools.ovc import convert_model

        return convert_model
    raise AttributeError(f"module 'openvino' has no attribute {name!r}")


def _openvino_cache_dir(model: str) -> Path | None:
    """OpenVINO's cache folder for this model file's content (:data:`OPENVINO_CACHE`); None
    (no cache) where it cannot be made."""
    from .models import content_digest, npcface_home

    try:
        path = npcface_home() / OPENVINO_CACHE / content_digest(model)[:16]
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.debug("OpenVINO model cache off: %s", exc)
        return None
    return path


def _with_batch(model: Any, n: int) -> Any:
    """A copy of an OpenVINO model whose first input has batch size ``n``."""
    fixed_model = model.clone()
    shape = fixed_model.inputs[0].get_partial_shape()
    shape[0] = n
    fixed_model.reshape({fixed_model.inputs[0]: shape})
    return fixed_model


def _save_model(model: Any, path: Path) -> None:
    """Save an OpenVINO model as IR (``.xml`` + ``.bin``, weights not compressed) at
    ``path``, atomically: the ``.xml`` appears last, complete."""
    ov = import_openvino()

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_suffix(".bin")):
            if leftover.exists():
                leftover.unlink()


_CPU_ENGINES = {"opencv": OpenCVRunner, "openvino": OpenVINORunner}


def _cpu_engine(
    name: str, path: Path, threads: int | None, static_batches: Sequence[int] | None
) -> Runner:
    if name == "openvino" and static_batches is not None:
        return OpenVINORunner(path, threads, static_batches=static_batches)
    return _CPU_ENGINES[name](path, threads)


def load_runner(
    path: str | os.PathLike[str],
    providers: str | Sequence[str] | None = None,
    threads: int | None = None,
    backend: str = "auto",
    candidates: Sequence[str] = ("onnxruntime",),
    sample_shape: tuple[int, ...] | None = None,
    varying_input: bool | None = None,
    static_batches: Sequence[int] | None = None,
) -> Runner:
    """Load a model with the fastest suitable engine.

    Args:
        path: ``.onnx`` file, or a TensorRT ``.engine`` file.
        providers: ONNX Runtime providers (None = auto, see module doc).
        threads: intra-op threads (None = the engine's default: all cores).
        backend: "auto", "onnxruntime", "opencv", "openvino" or "tensorrt".
        candidates: engines allowed for this model when ``backend="auto"`` on CPU.
        sample_shape: an input shape used to time the candidates once (cached on disk).
        varying_input: the input's height and width vary between calls (detectors); see
            :class:`OrtRunner`.
        static_batches: OpenVINO's fixed-batch models (None: :data:`STATIC_BATCHES`).
    """
    path = Path(path)
    if path.suffix == ".engine" or backend == "tensorrt":
        from .trt_runner import TensorRTRunner

        return TensorRTRunner(path)
    if backend == "onnxruntime":
        return OrtRunner(path, providers, threads, varying_input)
    if backend in _CPU_ENGINES:
        return _cpu_engine(backend, path, threads, static_batches)
    if backend != "auto":
        raise ModelError(
            f"unknown backend {backend!r}; use auto, onnxruntime, opencv, openvino or tensorrt"
        )
    if len(candidates) < 2 or sample_shape is None:
        return OrtRunner(path, providers, threads, varying_input)
    if _gpu_possible(providers):
        ort_runner = OrtRunner(path, providers, threads, varying_input)
        if set(ort_runner.providers) & GPU_PROVIDERS:
            return ort_runner
        return _fastest(path, lambda: ort_runner, candidates, sample_shape, threads, static_batches)
    # CPU only: an ONNX Runtime session is built only when it is timed or it won
    return _fastest(
        path,
        lambda: OrtRunner(path, providers, threads, varying_input),
        candidates,
        sample_shape,
        threads,
        static_batches,
    )


def _gpu_possible(providers: str | Sequence[str] | None) -> bool:
    """Whether ONNX Runtime may run on a GPU for this request: a GPU provider was asked for
    (missing ones raise in :class:`OrtRunner`), or "auto" and this ONNX Runtime has one."""
    wanted = normalize_providers(providers)
    if wanted is not None:
        return bool(set(wanted) & GPU_PROVIDERS)
    import onnxruntime as ort

    if set(ort.get_available_providers()) & GPU_PROVIDERS:
        return True
    hint = shadowed_gpu_runtime()
    if hint:
        _warn_once(hint)
    return False


def shadowed_gpu_runtime(site: Path | None = None) -> str | None:
    """What to do when both ``onnxruntime`` and ``onnxruntime-gpu`` are installed (as the
    base requirement and the ``gpu`` extra make them): they install the same ``onnxruntime``
    package and the CPU build hides the CUDA provider (microsoft/onnxruntime#26996). None
    when only one is installed.

    Args:
        site: the folder holding ``onnxruntime`` (default: where it is imported from).
    """
    if site is None:
        import onnxruntime as ort

        site = Path(ort.__file__).resolve().parent.parent
    dists = {p.name.split("-")[0].lower() for p in site.glob("onnxruntime*.dist-info")}
    if {"onnxruntime", "onnxruntime_gpu"} <= dists:
        return (
            "both onnxruntime and onnxruntime-gpu are installed, and the CPU build hides the "
            "GPU one (microsoft/onnxruntime#26996): pip uninstall -y onnxruntime "
            "onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    return None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def _fastest(
    path: Path,
    make_ort_runner: Callable[[], OrtRunner],
    candidates: Sequence[str],
    sample_shape: tuple[int, ...],
    threads: int | None,
    static_batches: Sequence[int] | None = None,
) -> Runner:
    """Time each candidate engine once on this machine; remember the winner on disk. Only the
    winner is built when it is remembered (an ONNX Runtime session otherwise built beside an
    OpenVINO model cost 25 ms of every cold start)."""
    import cv2
    import onnxruntime as ort

    from .models import cache_problem, content_digest, npcface_home, record_hash

    key = "|".join(
        [
            content_digest(path)[:16],
            str(sample_shape),
            str(threads),
            platform.processor() or platform.machine(),
            str(os.cpu_count()),
            f"ort{ort.__version__}",
            f"cv{cv2.__version__}",
            f"ov{_version('openvino')}",
        ]
    )
    cache_file = npcface_home() / "autotune.json"
    problem = cache_problem(cache_file) if cache_file.is_file() else "absent"
    try:
        if problem != "absent" and problem is not None:
            raise ValueError(problem)
        cache = json.loads(cache_file.read_text()) if problem is None else {}
    except (OSError, ValueError) as exc:
        log.warning(
            "engine cache %s cannot be trusted (%s); timing the engines again", cache_file, exc
        )
        cache = {}
    winner = cache.get(key)
    runners: dict[str, Runner] = {}
    if winner is None:
        runners["onnxruntime"] = make_ort_runner()
        x = np.random.default_rng(0).uniform(0, 255, sample_shape).astype(np.float32)
        for name in candidates:
            if name not in runners and name in _CPU_ENGINES:
                try:
                    runners[name] = _cpu_engine(name, path, threads, static_batches)
                except ModelError as exc:
                    log.info("engine %s cannot run %s: %s", name, path.name, exc)
        timings = _time_runners(runners, x)
        winner = min(timings, key=timings.__getitem__)
        log.info("engine timings for %s: %s -> %s", path.name, timings, winner)
        cache[key] = winner
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cache_file, json.dumps(cache, indent=1), durable=False)
            record_hash(cache_file)
        except OSError:
            pass
    if winner in runners:
        return runners[winner]
    if winner not in _CPU_ENGINES:
        return make_ort_runner()
    try:
        return _cpu_engine(winner, path, threads, static_batches)
    except ModelError as exc:  # the cached winner is no longer installed
        log.info("cached engine %s unavailable (%s); using ONNX Runtime", winner, exc)
        return make_ort_runner()


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


def _time_runners(runners: dict[str, Runner], x: np.ndarray, rounds: int = 12) -> dict[str, float]:
    """Best time of each engine, timed round-robin so that machine load hits all alike."""
    for runner in runners.values():
        runner.run(x)  # warm-up
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner.run(x)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best
