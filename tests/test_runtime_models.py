"""Provider choice (pure logic, testable without a GPU), the model registry, prepared files."""

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from npcface.errors import ModelError, ProviderError
from npcface.models import (
    get_model_spec,
    list_models,
    npcface_home,
    original_file,
    resolve_model_file,
    sha256_file,
)
from npcface.runtime import choose_providers

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"


def test_auto_prefers_tensorrt_then_cuda_then_cpu():
    assert choose_providers(None, [CPU]) == [CPU]
    assert choose_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers(None, [CPU, TRT, CUDA]) == [TRT, CUDA, CPU]


def test_explicit_gpu_request_never_falls_back_silently():
    with pytest.raises(ProviderError, match="CUDAExecutionProvider"):
        choose_providers("cuda", [CPU])
    with pytest.raises(ProviderError, match="npcface\\[gpu\\]"):
        choose_providers(["tensorrt", "cuda"], [CUDA, CPU])
    assert choose_providers("cuda", [CUDA, CPU]) == [CUDA]
    assert choose_providers("cpu", [CUDA, CPU]) == [CPU]


def test_gpu_request_fails_on_this_cpu_machine():
    import onnxruntime as ort

    from npcface import FaceRecognizer

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA build of ONNX Runtime is installed")
    rec = FaceRecognizer(providers="cuda")
    with pytest.raises(ProviderError):
        _ = rec.embedder


def test_registry_lists_and_rejects():
    assert {"yunet", "sface"} <= set(list_models())
    assert list_models(kind="recognizer") == [
        n for n in list_models() if get_model_spec(n).kind == "recognizer"
    ]
    with pytest.raises(ModelError) as info:
        get_model_spec("arcface-nonexistent")
    assert "sface" in str(info.value) and "yunet" in str(info.value)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model_file("/no/such/model.onnx")


def test_files_come_from_the_package_and_match_sha256():
    for name in ("yunet", "sface", "retinaface-mnet025"):
        spec = get_model_spec(name)
        path = original_file(spec, allow_download=False)
        assert sha256_file(path) == spec.sha256
    # RetinaFace's weights ship inside npcface itself, with their licence notice
    import npcface

    weights = Path(npcface.__file__).parent / "weights"
    assert original_file(get_model_spec("retinaface-mnet025")).parent == weights
    assert "MIT License" in (weights / "LICENSE-retinaface.txt").read_text()


def test_a_tampered_cache_copy_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("NPCFACE_HOME", str(tmp_path))
    spec = get_model_spec("sface")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / spec.filename).write_bytes(b"not the model")
    path = original_file(spec, allow_download=False)  # falls through to the package copy
    assert sha256_file(path) == spec.sha256 and tmp_path not in path.parents


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NPCFACE_HOME", str(tmp_path / "h"))
    assert npcface_home() == tmp_path / "h"


def test_prepared_sface_is_clean_dynamic_and_equivalent():
    """The prepared fp32 file must load in ONNX Runtime, take any batch, and give the same
    embeddings as OpenCV's DNN running the shipped int8 weights (an independent engine)."""
    import cv2
    import onnxruntime as ort

    from npcface.modelprep import drop_dangling_inputs

    path = resolve_model_file("sface")
    assert resolve_model_file("sface") == path  # cached, not re-prepared
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["data"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert not any(n.op_type == "DequantizeLinear" for n in model.graph.node)

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (7, 3, 112, 112)).astype(np.float32)
    ours = sess.run(None, {"data": x})[0]
    assert ours.shape == (7, 128)

    raw = onnx.load(str(original_file(get_model_spec("sface"))))
    drop_dangling_inputs(raw)  # OpenCV 5 also refuses the dangling inputs
    net = cv2.dnn.readNetFromONNX(raw.SerializeToString() and _save(raw))
    net.setInput(x)
    ref = net.forward()
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999


def _save(model):
    import tempfile

    fd, name = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    onnx.save(model, name)
    return name


def _tiny_recognizer(path, dim=512, size=112):
    """An ONNX 'recogniser': global average pool per channel, then a fixed linear map."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(3).normal(size=(3, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["fc1"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return w


def test_insightface_pack_recogniser_is_found_and_normalised(tmp_path, monkeypatch):
    """A pack under $INSIGHTFACE_HOME is used as found, with ArcFace's RGB (x-127.5)/127.5."""
    from npcface.embed import Embedder

    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="insightface model pack"):
        Embedder("arcface-r50")
    w = _tiny_recognizer(tmp_path / "models" / "buffalo_l" / "w600k_r50.onnx")
    emb = Embedder("arcface-r50")
    assert emb.input_size == 112 and emb.info.embedding_size == 512
    crops = np.random.default_rng(4).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    got = emb.embed(crops)
    rgb = crops[..., ::-1].astype(np.float64)
    expected = ((rgb - 127.5) / 127.5).mean(axis=(1, 2)) @ w
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv", "openvino"])
def test_every_cpu_engine_gives_the_same_embeddings(backend):
    """Three independent engines run the same prepared file; they must agree."""
    from npcface.embed import Embedder

    crops = np.random.default_rng(5).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    ref = Embedder("sface", backend="onnxruntime").embed(crops)
    got = Embedder("sface", backend=backend).embed(crops)
    assert got.shape == (3, 128)
    assert (ref * got).sum(axis=1).min() > 0.9999


def test_autotune_remembers_its_choice(tmp_path, monkeypatch):
    import json

    from npcface.embed import Embedder

    monkeypatch.setenv("NPCFACE_HOME", str(tmp_path))
    first = Embedder("sface").runner.backend
    cache = json.loads((tmp_path / "autotune.json").read_text())
    assert list(cache.values()) == [first]
    assert first in ("onnxruntime", "opencv", "openvino")
    # a planted choice is obeyed: the measurement is not repeated
    key = next(iter(cache))
    other = "openvino" if first != "openvino" else "opencv"
    (tmp_path / "autotune.json").write_text(json.dumps({key: other}))
    from npcface.models import record_hash

    record_hash(tmp_path / "autotune.json")  # as npcface records a cache it writes
    # ... and only that engine is built (an ONNX Runtime session beside it cost every start)
    from npcface import runtime

    built = []
    real_init = runtime.OrtRunner.__init__

    def counted(self, *args, **kwargs):
        built.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(runtime.OrtRunner, "__init__", counted)
    assert Embedder("sface").runner.backend == other
    assert built == []


def test_unknown_backend():
    from npcface.embed import Embedder

    with pytest.raises(ModelError, match="unknown backend"):
        Embedder("sface", backend="cuda-magic")


def test_engine_files_take_their_facts_from_the_key_file(tmp_path):
    """A keyed .engine is described by its key file; without TensorRT it stops with the
    missing-extra error (not a metadata error). An unkeyed engine is refused."""
    from npcface.embed import Embedder
    from npcface.errors import MissingExtraError
    from npcface.modelinfo import RecognizerInfo
    from npcface.trt_runner import EngineKey, read_engine_info, write_engine_meta

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine")
    with pytest.raises(ModelError, match="no key file"):
        Embedder(str(engine))
    info = RecognizerInfo(name="ours", input_size=120, embedding_size=512)
    key = EngineKey("10.3.0", "8.6", "fp16", 1, 32, 64, 120, "0" * 64)
    write_engine_meta(engine, key, info)
    assert read_engine_info(engine) == info
    with pytest.raises(MissingExtraError, match="tensorrt"):
        Embedder(str(engine))


def test_onnx_runtime_threads_do_not_spin_after_a_run():
    """Spinning pool threads starved the pipeline's next step (the recogniser in OpenVINO:
    13.6 ms instead of 7.2 ms after a YuNet pass on 2 cores); sessions turn it off."""
    from npcface.models import resolve_model_file
    from npcface.runtime import OrtRunner

    runner = OrtRunner(resolve_model_file("yunet"))
    opts = runner.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_openvino_runs_small_batches_through_static_models_with_the_same_numbers():
    """Batches of 1 and 2 go through models compiled for exactly that shape (faster on CPU);
    their embeddings must match ONNX Runtime's (an independent engine), also from threads."""
    pytest.importorskip("openvino")
    from concurrent.futures import ThreadPoolExecutor

    from npcface.embed import Embedder
    from npcface.runtime import STATIC_BATCHES

    assert set(STATIC_BATCHES) == {1, 2}
    crops = np.random.default_rng(7).integers(0, 256, (5, 112, 112, 3), dtype=np.uint8)
    ref = Embedder("sface", backend="onnxruntime").embed(crops)
    ov = Embedder("sface", backend="openvino")
    spans = [(i, i + 1) for i in range(5)] + [(0, 2), (2, 4), (0, 3), (0, 5)]

    def check(span: tuple[int, int]) -> float:
        a, b = span
        return float((ov.embed(crops[a:b]) * ref[a:b]).sum(axis=1).min())

    assert min(check(s) for s in spans) > 0.9999
    with ThreadPoolExecutor(4) as ex:
        assert min(ex.map(check, spans * 6)) > 0.9999


def _scale_model(path, scale: float) -> None:
    """A tiny ONNX graph y = x * scale with a dynamic batch (like a recogniser's input)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4, 4])
    c = helper.make_tensor("c", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "c"], ["y"])], "g", [x], [y], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_openvino_cache_follows_a_model_rewritten_in_place(tmp_path, monkeypatch):
    """OpenVINO keys the compiled models it caches for a path by the path alone: a model
    exported again under the same name must still run as the new file, at every batch size
    (the static batch-1/2 models and the dynamic one), in a fresh process's runner too."""
    pytest.importorskip("openvino")
    from npcface.runtime import OPENVINO_CACHE, OpenVINORunner

    monkeypatch.setenv("NPCFACE_HOME", str(tmp_path / "home"))
    path = tmp_path / "model.onnx"
    x = np.ones((3, 3, 4, 4), np.float32)
    for scale in (2.0, 3.0, 2.0):
        _scale_model(path, scale)
        runner = OpenVINORunner(path)
        assert set(runner._by_batch) == {1, 2}
        for n in (1, 2, 3):
            np.testing.assert_array_equal(runner.run(x[:n])[0], x[:n] * scale)
    folders = list((tmp_path / "home" / OPENVINO_CACHE).iterdir())
    assert len(folders) == 2  # one per content; the third runner reused the first's
    assert all(any(f.glob("*.blob")) and (f / "batch2.xml").is_file() for f in folders)


def test_content_digest_is_remembered_until_the_file_changes(tmp_path):
    from npcface.models import content_digest

    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    first = content_digest(path)
    assert first == sha256_file(path) and content_digest(path) == first
    path.write_bytes(b"two")
    assert content_digest(path) == sha256_file(path) != first


def test_flip_fusion_builds_the_openvino_model_for_batch_2_only():
    """With flip fusion every batch is a crop and its mirror (even): OpenVINO gets no batch-1
    model (a compile less at every start); an odd batch still runs, through the dynamic
    model, with ONNX Runtime's numbers."""
    pytest.importorskip("openvino")
    from npcface import FaceRecognizer
    from npcface.embed import Embedder

    def embedder(flip: bool) -> Embedder:
        return FaceRecognizer(recognizer="sface", flip=flip, backend="openvino").embedder

    flip = embedder(True)
    assert set(flip.runner._by_batch) == {2}
    assert set(embedder(False).runner._by_batch) == {1, 2}
    crops = np.random.default_rng(3).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    ref = Embedder("sface", backend="onnxruntime")
    for n in (1, 3):
        for fused in (False, True):
            got = flip.embed(crops[:n], flip=fused)
            assert (got * ref.embed(crops[:n], flip=fused)).sum(axis=1).min() > 0.9999


def test_both_onnx_runtimes_installed_is_named_with_the_fix(tmp_path):
    """The gpu extra puts onnxruntime-gpu beside the base onnxruntime; with both, the CUDA
    provider is missing: npcface says which to remove (in a GPU request's error too)."""
    from npcface.runtime import choose_providers, shadowed_gpu_runtime

    (tmp_path / "onnxruntime-1.32.0.dist-info").mkdir()
    assert shadowed_gpu_runtime(tmp_path) is None
    (tmp_path / "onnxruntime_gpu-1.32.0.dist-info").mkdir()
    hint = shadowed_gpu_runtime(tmp_path)
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in hint
    assert shadowed_gpu_runtime() is None  # this machine has the CPU build only
    with pytest.raises(ProviderError, match=r"npcface\[gpu\]"):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_openvino_is_imported_without_its_converter_which_stays_usable(lfw_dir):
    """A verify imports OpenVINO but not its converter (0.15 s of a cold start, and a
    telemetry start-up); code that wants the converter afterwards still gets it."""
    pytest.importorskip("openvino")
    import subprocess
    import sys

    from conftest import lfw_image

    code = (
        "import sys\n"
        "from npcface import FaceRecognizer\n"
        f"assert FaceRecognizer().verify({str(lfw_image(lfw_dir, 'Colin_Powell', 1))!r}, "
        f"{str(lfw_image(lfw_dir, 'Colin_Powell', 2))!r}).verified\n"
        "assert 'openvino' in sys.modules and 'openvino.tools.ovc' not in sys.modules\n"
        "import openvino\n"
        "from openvino import convert_model\n"
        "assert openvino.convert_model is convert_model and callable(convert_model)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_openvino_with_set_threads_does_not_pin_them_to_cores(tmp_path, monkeypatch):
    """OpenVINO pins inference threads to the same cores in every process: two enrolment
    workers of one thread each then shared one core (2x slower). A runner given its threads
    leaves them to the OS; one with OpenVINO's default threads keeps OpenVINO's default."""
    pytest.importorskip("openvino")
    from npcface.runtime import OpenVINORunner

    monkeypatch.setenv("NPCFACE_HOME", str(tmp_path / "home"))
    path = tmp_path / "model.onnx"
    _scale_model(path, 2.0)
    one = OpenVINORunner(path, threads=1)
    assert one.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert one.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    x = np.ones((1, 3, 4, 4), np.float32)
    np.testing.assert_array_equal(one.run(x)[0], x * 2.0)
