"""TensorRT: engine cache keys, argument handling, and the errors for a missing TensorRT or GPU.

No GPU and no TensorRT here: building and running an engine are skipped with that reason;
the refusal of a mismatched engine is tested with stand-in ``tensorrt``/``pycuda`` modules
that report a GPU, which exercises every check that runs before TensorRT is called.
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from npcface.errors import MissingExtraError, ModelError, ProviderError
from npcface.modelinfo import RecognizerInfo
from npcface.runtime import load_runner
from npcface.trt_runner import (
    EngineKey,
    TensorRTRunner,
    engine_file_name,
    key_file,
    read_engine_info,
    read_engine_meta,
    write_engine_meta,
)

KEY = EngineKey(
    tensorrt_version="10.3.0",
    compute_capability="8.6",
    precision="fp16",
    min_batch=1,
    opt_batch=32,
    max_batch=64,
    input_size=120,
    onnx_sha256="0" * 64,
)
INFO = RecognizerInfo(name="npcface-mbf", input_size=120, thresholds={"default": 0.4})


# --- keys ----------------------------------------------------------------------------------
def test_key_digest_is_stable_and_covers_every_field() -> None:
    assert KEY.digest() == replace(KEY).digest()
    assert len(KEY.digest()) == 16
    changes = {
        "tensorrt_version": "10.4.0",
        "compute_capability": "8.9",
        "precision": "int8",
        "min_batch": 2,
        "opt_batch": 16,
        "max_batch": 128,
        "input_size": 112,
        "onnx_sha256": "1" * 64,
    }
    digests = {KEY.digest()}
    for field, value in changes.items():
        other = replace(KEY, **{field: value})
        assert other.digest() not in digests, field
        digests.add(other.digest())
        assert other.mismatches(KEY) == [f"{field}: {value} != {getattr(KEY, field)}"]


def test_key_validates_precision_and_profile() -> None:
    with pytest.raises(ValueError, match="precision"):
        replace(KEY, precision="int4")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        replace(KEY, min_batch=8, opt_batch=4)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        replace(KEY, min_batch=0)


def test_engine_file_name_names_precision_profile_and_key() -> None:
    name = engine_file_name("mbf", KEY)
    assert name == f"mbf.fp16.b1-32-64.{KEY.digest()}.engine"
    assert engine_file_name("mbf", replace(KEY, compute_capability="7.5")) != name


def test_runtime_mismatch_refuses_other_tensorrt_or_gpu() -> None:
    assert KEY.runtime_mismatches("10.3.0", "8.6") == []
    (msg,) = KEY.runtime_mismatches("10.4.0", "8.6")
    assert "TensorRT 10.3.0" in msg and "10.4.0" in msg
    (msg,) = KEY.runtime_mismatches("10.3.0", "8.9")
    assert "compute capability 8.6" in msg and "8.9" in msg


def test_key_file_round_trip(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    written = write_engine_meta(engine, KEY, INFO)
    assert written == key_file(engine) == tmp_path / "m.engine.json"
    key, info = read_engine_meta(engine)
    assert key == KEY and info == INFO
    assert read_engine_info(engine) == INFO


def test_unkeyed_engine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no key file"):
        read_engine_meta(tmp_path / "m.engine")
    (tmp_path / "m.engine.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        read_engine_meta(tmp_path / "m.engine")


# --- the builder's pure parts --------------------------------------------------------------
def test_build_config_and_profile_parsing() -> None:
    from npcface.export.tensorrt import TensorRTBuildConfig, parse_profile

    assert parse_profile("1,32,64") == (1, 32, 64)
    assert parse_profile("4:16:16") == (4, 16, 16)
    for bad in ("32", "1,2", "8,4,16", "0,1,2", "a,b,c"):
        with pytest.raises(ValueError):
            parse_profile(bad)
    cfg = TensorRTBuildConfig()
    assert cfg.profile == (1, 32, 64) and cfg.opt_batch > 1 and cfg.precision == "fp16"
    with pytest.raises(ValueError, match="precision"):
        TensorRTBuildConfig(precision="bf16")
    with pytest.raises(ValueError):
        TensorRTBuildConfig(min_batch=4, opt_batch=2)


def test_engine_key_for_a_file_and_output_path(tmp_path: Path) -> None:
    from npcface.export.onnx import file_sha256
    from npcface.export.tensorrt import (
        TensorRTBuildConfig,
        engine_output_path,
        make_engine_key,
        reusable,
    )

    onnx_file = tmp_path / "mbf.onnx"
    onnx_file.write_bytes(b"model bytes")
    cfg = TensorRTBuildConfig(precision="int8", opt_batch=16)
    key = make_engine_key(onnx_file, cfg, "10.3.0", "8.6", 120)
    assert key.onnx_sha256 == file_sha256(onnx_file)
    assert key.profile == (1, 16, 64) and key.precision == "int8"
    # a new ONNX file means a new key
    onnx_file.write_bytes(b"retrained model bytes")
    assert make_engine_key(onnx_file, cfg, "10.3.0", "8.6", 120) != key

    default = engine_output_path(onnx_file, None, key)
    assert default.parent == tmp_path and default.name == engine_file_name("mbf", key)
    assert engine_output_path(onnx_file, tmp_path / "x.engine", key) == tmp_path / "x.engine"
    assert engine_output_path(onnx_file, tmp_path / "engines", key).parent.name == "engines"

    engine = tmp_path / "x.engine"
    assert not reusable(engine, key)  # nothing built yet
    engine.write_bytes(b"serialized")
    assert not reusable(engine, key)  # no key file: rebuild
    write_engine_meta(engine, key, INFO)
    assert reusable(engine, key)
    assert not reusable(engine, replace(key, tensorrt_version="10.4.0"))
    assert not reusable(engine, replace(key, compute_capability="9.0"))


def _tiny_onnx(folder: Path) -> Path:
    """A real (N, 3, 8, 8) -> (N, 4) ONNX file with npcface metadata, built without torch."""
    from onnx import TensorProto, helper, numpy_helper

    from npcface.export.onnx import save_with_info

    w = numpy_helper.from_array(np.ones((4, 3, 8, 8), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"]),
            helper.make_node("Flatten", ["c"], ["embedding"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime reads (opset 17 needs IR >= 8)
    info = RecognizerInfo(name="tiny", input_size=8, embedding_size=4)
    return save_with_info(model, info, folder / "m.onnx")


def test_int8_without_calibration_is_refused_before_tensorrt(tmp_path: Path) -> None:
    from npcface.export.tensorrt import TensorRTBuildConfig, build_engine

    path = _tiny_onnx(tmp_path)
    with pytest.raises(ValueError, match="calibration"):
        build_engine(path, config=TensorRTBuildConfig(precision="int8"))
    with pytest.raises(ModelError, match="does not exist"):
        build_engine(tmp_path / "missing.onnx")


# --- missing TensorRT / GPU ----------------------------------------------------------------
@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError


def test_runner_without_tensorrt_names_the_extra(no_tensorrt: None, tmp_path: Path) -> None:
    with pytest.raises(MissingExtraError, match=r"npcface\[tensorrt\]") as err:
        TensorRTRunner(tmp_path / "m.engine")
    assert err.value.extra == "tensorrt" and err.value.module == "tensorrt"
    # the SDK's runtime sends .engine files and backend="tensorrt" here
    with pytest.raises(MissingExtraError, match="TensorRT engines"):
        load_runner(tmp_path / "m.engine")
    with pytest.raises(MissingExtraError):
        load_runner(tmp_path / "m.onnx", backend="tensorrt")


def test_build_without_tensorrt_names_the_extra(no_tensorrt: None, tmp_path: Path) -> None:
    from npcface.cli import main
    from npcface.export.tensorrt import build_engine

    onnx_file = _tiny_onnx(tmp_path)
    with pytest.raises(MissingExtraError, match=r"npcface\[tensorrt\]"):
        build_engine(onnx_file)
    assert main(["export", "tensorrt", str(onnx_file)]) == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a readable ONNX"):
        build_engine(bad)


class _FakeDevice:
    capability = (8, 6)
    count = 1

    def __init__(self, index: int) -> None:
        self.index = index

    @classmethod
    def count_devices(cls) -> int:
        return cls.count

    def compute_capability(self) -> tuple[int, int]:
        return self.capability


def _fake_gpu_stack(
    monkeypatch: pytest.MonkeyPatch, *, init_error: str | None = None, gpus: int = 1
) -> None:
    """Stand-ins for ``tensorrt`` and ``pycuda.driver`` (only what runs before TensorRT does)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    driver = types.ModuleType("pycuda.driver")

    def init() -> None:
        if init_error:
            raise RuntimeError(init_error)

    device = type("Device", (_FakeDevice,), {"count": gpus})
    device.count = staticmethod(lambda: gpus)  # pycuda: Device.count()
    driver.init = init
    driver.Device = device
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = driver
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)


def test_no_cuda_driver_is_a_provider_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_gpu_stack(monkeypatch, init_error="cuInit failed: no CUDA-capable device is detected")
    with pytest.raises(ProviderError, match="CUDA GPU.*no CUDA-capable device"):
        TensorRTRunner(tmp_path / "m.engine")


def test_zero_gpus_is_a_provider_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_gpu_stack(monkeypatch, gpus=0)
    with pytest.raises(ProviderError, match="has 0"):
        TensorRTRunner(tmp_path / "m.engine")


def test_mismatched_engine_is_refused_never_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_gpu_stack(monkeypatch)  # TensorRT 10.3.0 on a compute capability 8.6 GPU
    engine = tmp_path / "m.engine"
    with pytest.raises(ModelError, match="does not exist"):
        TensorRTRunner(engine)
    engine.write_bytes(b"serialized engine")
    with pytest.raises(ModelError, match="no key file"):
        TensorRTRunner(engine)
    for stale in (replace(KEY, tensorrt_version="8.6.1"), replace(KEY, compute_capability="7.5")):
        write_engine_meta(engine, stale, INFO)
        with pytest.raises(ModelError, match="(?i)refusing to run .*rebuild"):
            TensorRTRunner(engine)


# --- what needs a GPU ----------------------------------------------------------------------
def _gpu_available() -> str | None:
    import importlib

    try:
        importlib.import_module("tensorrt")
        cuda = importlib.import_module("pycuda.driver")
        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU"
    except Exception as exc:  # noqa: BLE001 - any failure means: cannot test here
        return f"TensorRT/pycuda/GPU not available ({type(exc).__name__}: {exc})"
    return None


@pytest.mark.skipif(_gpu_available() is not None, reason=f"needs a GPU: {_gpu_available()}")
def test_build_and_run_engine_on_gpu(tmp_path: Path) -> None:  # pragma: no cover - no GPU in CI
    torch = pytest.importorskip("torch")
    from npcface.export.onnx import export_onnx
    from npcface.export.tensorrt import TensorRTBuildConfig, build_engine

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 32, metadata={"name": "m"})
    cfg = TensorRTBuildConfig(precision="fp32", min_batch=1, opt_batch=4, max_batch=8)
    engine = build_engine(path, tmp_path, cfg)
    assert build_engine(path, tmp_path, cfg) == engine  # reused, not rebuilt
    runner = TensorRTRunner(engine)
    x = np.random.default_rng(0).normal(size=(11, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(runner.run(x)[0], ref, atol=1e-3)


# --- INT8 calibration keys (issue 16.7) ----------------------------------------------------
def test_key_digest_covers_calibration_and_keeps_old_digests() -> None:
    import hashlib
    import json
    from dataclasses import asdict

    old_fields = {k: v for k, v in asdict(KEY).items() if k != "calibration_sha256"}
    by_hand = hashlib.sha256(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:16]
    assert KEY.digest() == by_hand  # uncalibrated engines keep their names
    a, b = replace(KEY, calibration_sha256="a" * 64), replace(KEY, calibration_sha256="b" * 64)
    assert len({KEY.digest(), a.digest(), b.digest()}) == 3
    assert a.mismatches(b) == [f"calibration_sha256: {'a' * 64} != {'b' * 64}"]


def test_calibration_hash_and_cache_path_follow_the_data_and_tensorrt() -> None:
    from npcface.export.tensorrt import calibration_cache_path, calibration_sha256

    rng = np.random.default_rng(0)
    crops_a = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    crops_b = crops_a.copy()
    crops_b[3, 2, 1, 0] ^= 1  # one bit of one crop
    info = RecognizerInfo(name="tiny", input_size=8, embedding_size=4)
    ha, hb = calibration_sha256(crops_a, info, 4), calibration_sha256(crops_b, info, 4)
    assert len({ha, hb, calibration_sha256(crops_a, info, 8)}) == 3
    assert calibration_sha256(crops_a, replace(info, std=(1.0,) * 3), 4) != ha
    assert calibration_sha256(crops_a.copy(), info, 4) == ha
    ka = replace(KEY, precision="int8", calibration_sha256=ha)
    paths = {
        calibration_cache_path("/c", ka),
        calibration_cache_path("/c", replace(ka, calibration_sha256=hb)),
        calibration_cache_path("/c", replace(ka, tensorrt_version="10.4.0")),
    }
    assert len(paths) == 3


def _fake_builder(monkeypatch: pytest.MonkeyPatch, version: str, log: list) -> None:
    """Stand-ins for the TensorRT builder API that :func:`build_engine` calls. The fake
    "calibration" behaves as TensorRT's: it asks the calibrator for a cache, and only
    without one reads every batch and writes a cache derived from the data it saw."""
    import hashlib

    _fake_gpu_stack(monkeypatch)
    trt = sys.modules["tensorrt"]
    driver = sys.modules["pycuda.driver"]
    trt.__version__ = version
    seen = hashlib.sha256()

    class Alloc(int):
        pass

    driver.mem_alloc = lambda nbytes: Alloc(4096)
    driver.memcpy_htod = lambda dst, arr: seen.update(np.ascontiguousarray(arr).tobytes())

    class Calibrator:
        def __init__(self) -> None:
            pass

    class Config:
        int8_calibrator = None

        def set_memory_pool_limit(self, *a): ...
        def add_optimization_profile(self, p): ...
        def set_flag(self, f): ...
        def set_calibration_profile(self, p): ...
        def create_timing_cache(self, blob):
            return blob

        def set_timing_cache(self, cache, ignore_mismatch): ...
        def get_timing_cache(self):
            return types.SimpleNamespace(serialize=lambda: b"timing")

    class Builder:
        def __init__(self, logger) -> None: ...
        def create_network(self, flags):
            inp = types.SimpleNamespace(name="input")
            return types.SimpleNamespace(num_inputs=1, get_input=lambda i: inp)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network, config):
            cal = config.int8_calibrator
            if cal is not None:
                cache = cal.read_calibration_cache()
                log.append(cache)
                if cache is None:
                    while cal.get_batch(["input"]) is not None:
                        pass
                    cal.write_calibration_cache(b"scales of " + seen.hexdigest().encode())
            return b"serialized engine"

    class Parser:
        num_errors = 0

        def __init__(self, network, logger) -> None: ...
        def parse_from_file(self, path):
            return True

    ns = types.SimpleNamespace
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Builder, trt.OnnxParser, trt.IInt8EntropyCalibrator2 = Builder, Parser, Calibrator
    trt.MemoryPoolType = ns(WORKSPACE=0)
    trt.BuilderFlag = ns(FP16=0, INT8=1)


def test_int8_engine_and_cache_are_keyed_on_the_calibration_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from npcface.export.tensorrt import TensorRTBuildConfig, build_engine

    onnx_file = _tiny_onnx(tmp_path)  # 8 x 8 input
    rng = np.random.default_rng(0)
    set_a = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    set_b = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    cfg = TensorRTBuildConfig(precision="int8", opt_batch=4, max_batch=8, calibration_batch=4)
    handed: list = []  # the cache each calibration was handed (None = calibrate afresh)
    _fake_builder(monkeypatch, "10.3.0", handed)

    engine_a = build_engine(onnx_file, tmp_path, cfg, calib_crops=set_a)
    assert handed == [None]
    engine_b = build_engine(onnx_file, tmp_path, cfg, calib_crops=set_b)
    assert engine_b != engine_a  # set B does not reuse the engine calibrated on set A
    assert handed == [None, None]  # ... nor A's calibration cache
    assert read_engine_meta(engine_a)[0].calibration_sha256 != (
        read_engine_meta(engine_b)[0].calibration_sha256
    )

    assert build_engine(onnx_file, tmp_path, cfg, calib_crops=set_a) == engine_a  # reused
    assert len(handed) == 2
    build_engine(onnx_file, tmp_path, cfg, calib_crops=set_a, rebuild=True)
    assert handed[-1] is not None and handed[-1].startswith(b"scales of ")  # A's own cache
    assert build_engine(onnx_file, tmp_path, cfg, calib_crops=set_b, rebuild=True) == engine_b
    assert handed[-1] != handed[-2]  # B's rebuild got B's cache, not A's

    _fake_builder(monkeypatch, "10.4.0", handed)  # another TensorRT: nothing reused
    engine_new = build_engine(onnx_file, tmp_path, cfg, calib_crops=set_a)
    assert engine_new not in (engine_a, engine_b) and handed[-1] is None
