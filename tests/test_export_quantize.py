"""fp16 / INT8 variants keep their metadata and stay close to fp32; the comparison report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from npcface.errors import ModelError  # noqa: E402
from npcface.eval import Pair  # noqa: E402
from npcface.export.crops import preprocess_crops  # noqa: E402
from npcface.export.onnx import save_with_info  # noqa: E402
from npcface.export.quantize import (  # noqa: E402
    Int8Options,
    convert_fp16,
    op_histogram,
    quantize_int8,
    topological_sort,
)
from npcface.export.report import LfwCrops, compare_variants, subset_pairs  # noqa: E402
from npcface.modelinfo import RecognizerInfo, read_onnx_info  # noqa: E402

S = 24
INFO = RecognizerInfo(name="convnet", input_size=S, embedding_size=16, thresholds={"default": 0.3})


def _convnet(folder: Path, seed: int = 0) -> Path:
    """A small conv net (conv-relu x2, global pool, gemm) as an fp32 ONNX file with metadata."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32)
    w3 = rng.normal(0, 0.3, (16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, S, S])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime reads (opset 17 needs IR >= 8)
    return save_with_info(model, INFO, folder / "convnet.onnx")


def _faces(n: int, seed: int = 0) -> np.ndarray:
    """Smooth face-like uint8 crops (blobs), not white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S] / S
    out = np.empty((n, S, S, 3), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.4)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)
        colour = rng.uniform(60, 220, 3)
        out[i] = np.clip(blob[..., None] * colour + rng.normal(0, 8, (S, S, 3)), 0, 255)
    return out


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _convnet(tmp_path_factory.mktemp("q"))


def _embed(path: Path, crops: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": preprocess_crops(crops, INFO)})[0]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_fp16_keeps_metadata_and_accuracy(fp32: Path, tmp_path: Path) -> None:
    half = convert_fp16(fp32, tmp_path / "convnet.fp16.onnx")
    info = read_onnx_info(str(half))
    assert info.extra["precision"] == "fp16"
    assert (info.name, info.input_size, info.thresholds) == (INFO.name, S, INFO.thresholds)
    weights = onnx.load(str(half)).graph.initializer
    assert all(w.data_type == TensorProto.FLOAT16 for w in weights)
    crops = _faces(9)
    cos = (_embed(half, crops) * _embed(fp32, crops)).sum(axis=1)
    assert cos.min() > 0.999


@pytest.mark.parametrize(
    "options",
    [Int8Options(), Int8Options(quant_format="qoperator", per_channel=False)],
    ids=lambda o: o.tag,
)
def test_int8_calibrated_on_crops(fp32: Path, tmp_path: Path, options: Int8Options) -> None:
    calib = _faces(48, seed=1)
    q = quantize_int8(fp32, tmp_path / f"convnet.{options.tag}.onnx", calib, options=options)
    info = read_onnx_info(str(q))
    assert info.extra["precision"] == "int8"
    assert info.extra["int8"]["format"] == options.quant_format
    assert info.extra["int8"]["calibration_crops"] == 48
    ops = op_histogram(q)
    if options.quant_format == "qdq":
        assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    else:
        assert ops.get("QLinearConv", 0) == 2
    crops = _faces(7, seed=2)  # batch 7: the quantised file keeps the dynamic batch
    cos = (_embed(q, crops) * _embed(fp32, crops)).sum(axis=1)
    assert cos.min() > 0.98, cos


def test_int8_needs_crops_and_facts(fp32: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(fp32, tmp_path / "x.onnx", np.zeros((0, S, S, 3), np.uint8))
    bare = onnx.load(str(fp32))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelError, match="no npcface metadata"):
        quantize_int8(tmp_path / "bare.onnx", None, _faces(4))
    with pytest.raises(ValueError, match="quant_format"):
        Int8Options(quant_format="int4")


def test_topological_sort_repairs_node_order(fp32: Path) -> None:
    model = onnx.load(str(fp32))
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    topological_sort(model.graph)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in nodes]


def test_subset_pairs_keeps_every_fold() -> None:
    pairs = [
        Pair(Path(f"{f}{s}{i}"), Path("b"), s, f)
        for f in range(3)
        for s in (True, False)
        for i in range(5)
    ]
    kept = subset_pairs(pairs, 2)
    assert len(kept) == 3 * 2 * 2
    assert {(p.fold, p.same) for p in kept} == {(f, s) for f in range(3) for s in (True, False)}
    assert subset_pairs(pairs, None) == pairs


def test_comparison_report_side_by_side(fp32: Path, tmp_path: Path) -> None:
    half = convert_fp16(fp32, tmp_path / "h.onnx")
    n = 40
    crops = _faces(n, seed=3)
    paths = [Path(f"img{i}.jpg") for i in range(n)]
    # genuine pairs: the same crop twice (score 1); impostor pairs: different crops
    pairs = [Pair(paths[i], paths[i], True, i % 4) for i in range(20)] + [
        Pair(paths[i], paths[i + 20], False, i % 4) for i in range(20)
    ]
    failed = {paths[39]: "no face"}
    data = LfwCrops(pairs, paths, crops, failed, S)
    report = compare_variants(
        {"fp32": fp32, "fp16": half}, data, batches=(1, 4), rounds=2, min_seconds=0.01
    )
    assert [v.name for v in report.variants] == ["fp32", "fp16"]
    assert report.failed_images == 1 and report.pairs == 40
    for v in report.variants:
        assert 0.5 <= v.accuracy <= 1.0
        assert set(v.ms_per_face) == {1, 4} and all(t > 0 for t in v.ms_per_face.values())
    table = report.markdown()
    assert "| fp16 |" in table and "x vs fp32 b4" in table
    assert report.to_dict()["variants"][0]["name"] == "fp32"


def test_cli_quantize_writes_both_variants(fp32: Path, tmp_path: Path) -> None:
    import cv2

    from npcface.cli import main

    calib = tmp_path / "calib"
    calib.mkdir()
    for i, crop in enumerate(_faces(20, seed=4)):
        cv2.imwrite(str(calib / f"{i:02d}.png"), crop)  # already S x S: used as aligned crops
    out = tmp_path / "out"
    args = ["export", "quantize", str(fp32), "--fp16", "--int8", "--calib", str(calib)]
    assert main([*args, "-o", str(out), "--per-tensor", "--format", "qoperator"]) == 0
    assert read_onnx_info(str(out / "convnet.fp16.onnx")).extra["precision"] == "fp16"
    int8 = read_onnx_info(str(out / "convnet.int8-qoperator-pt.onnx"))
    assert int8.extra["int8"]["calibration_crops"] == 20
    assert main(["export", "quantize", str(fp32)]) == 2  # nothing asked for
    assert main(["export", "quantize", str(fp32), "--int8"]) == 2  # no calibration images
