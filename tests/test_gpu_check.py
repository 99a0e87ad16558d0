"""The GPU check's plumbing on a CPU: bench/gpu_check.sh and bench/gpu_check.py run as the
GPU machine would run them (subprocesses), at tiny sizes (``--device cpu --quick``), on a
machine without CUDA (every CUDA step recorded as skipped), with bad arguments, and the
step runner's handling of failures, skips and failed checks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
SHELL = REPO / "bench" / "gpu_check.sh"
# the record's contract, written out here (not read from the script)
STEPS = [
    "environment",
    "train_resume",
    "export",
    "parity_cuda",
    "embed_throughput",
    "provider_fallback",
    "partial_fc",
    "train_compile",
    "onnxruntime_gpu",
    "tensorrt",
    "faiss_gpu",
]
CUDA_STEPS = ["train_resume", "export", "parity_cuda", "embed_throughput", "partial_fc"]
CUDA_STEPS.append("train_compile")
OPTIONAL = ["onnxruntime_gpu", "tensorrt", "faiss_gpu"]

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
needs_no_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="this machine has CUDA: the no-GPU path does not apply"
)
cpu_only_ort = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="onnxruntime-gpu is installed here: the loud fall-back has nothing to refuse",
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NPCFACE_HOME=str(tmp_path / "home"), OMP_WAIT_POLICY="PASSIVE")
    env.pop("OUT", None)
    return env


def _run(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check_shape(rec: dict) -> None:
    """What every record holds, whatever ran."""
    assert rec["format"] == "npcface-gpu-check/1"
    assert list(rec["steps"]) == STEPS
    for name, step in rec["steps"].items():
        assert step["status"] in ("ok", "failed", "skipped"), name
        assert isinstance(step["seconds"], float | int) and step["seconds"] >= 0, name
        if step["status"] == "skipped":
            assert step["reason"], name
        if step["status"] == "failed":
            assert step["error"], name
    summary = rec["summary"]
    counts = {
        s: sum(v["status"] == s for v in rec["steps"].values()) for s in ("ok", "failed", "skipped")
    }
    assert {k: summary[k] for k in counts} == counts
    assert summary["failed_steps"] == [
        n for n, v in rec["steps"].items() if v["status"] == "failed"
    ]
    assert summary["running"] == []


# ----------------------------------------------------------------------------- arguments


def test_unknown_step_is_refused_with_the_valid_names(tmp_path: Path) -> None:
    r = _run(["--steps", "train_resume,warp_drive", "--out", str(tmp_path / "r.json")], tmp_path)
    assert r.returncode == 2
    assert "warp_drive" in r.stderr and "train_resume" in r.stderr and "faiss_gpu" in r.stderr
    assert not (tmp_path / "r.json").exists()


def test_unknown_device_is_refused(tmp_path: Path) -> None:
    r = _run(["--device", "tpu", "--out", str(tmp_path / "r.json")], tmp_path)
    assert r.returncode == 2 and "--device" in r.stderr
    assert not (tmp_path / "r.json").exists()


@needs_no_cuda
def test_device_cuda_without_cuda_is_refused(tmp_path: Path) -> None:
    r = _run(["--device", "cuda", "--out", str(tmp_path / "r.json")], tmp_path)
    assert r.returncode != 0 and "no CUDA device" in r.stderr
    assert not (tmp_path / "r.json").exists()


def test_shell_help_names_its_options(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(SHELL), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for word in ("--fetch-wheels", "--no-install", "--python", "gpu_carry", "$OUT"):
        assert word in r.stdout


# ----------------------------------------------------------------------------- no GPU


@needs_no_cuda
def test_without_cuda_every_cuda_step_is_skipped_and_the_run_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "nogpu.json"
    r = _run(["--out", str(out), "--skip", "provider_fallback"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    rec = json.loads(out.read_text())
    _check_shape(rec)
    assert rec["device"] is None and "no CUDA device" in rec["device_reason"]
    steps = rec["steps"]
    assert steps["environment"]["status"] == "ok"
    env = steps["environment"]["result"]
    assert env["torch"]["cuda_available"] is False
    assert env["onnxruntime_providers"] == ort.get_available_providers()
    for name in CUDA_STEPS:
        assert steps[name]["status"] == "skipped", name
        assert "no CUDA device" in steps[name]["reason"], name
    assert steps["provider_fallback"] == {
        "status": "skipped",
        "reason": "not selected",
        "seconds": 0.0,
    }
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime-gpu not installed on this machine" in steps["onnxruntime_gpu"]["reason"]
    for name in OPTIONAL:
        assert steps[name]["status"] == "skipped", name
    assert rec["summary"]["failed"] == 0
    assert rec["summary"]["ok"] == 1


# ----------------------------------------------------------------------------- quick CPU run


@pytest.mark.slow
@cpu_only_ort
def test_quick_cpu_run_through_the_shell_entry(tmp_path: Path) -> None:
    """The real steps at tiny sizes, started the way the GPU machine starts them."""
    out_dir, work = tmp_path / "out", tmp_path / "work"
    env = _env(tmp_path)
    env["OUT"] = str(out_dir)
    r = subprocess.run(
        ["bash", str(SHELL), "--no-install", "--python", sys.executable, "--device", "cpu",
         "--quick", "--work", str(work)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    log = (out_dir / "gpu_check.log").read_text()
    assert r.returncode == 0, log[-4000:]
    assert "gpu_check: 8 ok, 0 failed, 3 skipped" in log
    rec = json.loads((out_dir / "gpu_check.json").read_text())
    _check_shape(rec)
    assert rec["device"] == "cpu" and rec["quick"] is True
    assert rec["install"]["method"] == "skipped (--no-install)"
    steps = rec["steps"]
    assert [n for n, s in steps.items() if s["status"] == "ok"] == STEPS[:8]
    assert all(steps[n]["status"] == "skipped" for n in OPTIONAL)  # nothing of theirs here

    # train_resume: interrupted at step 2 of 4 and resumed; the script says the losses match
    res = steps["train_resume"]["result"]
    assert res["steps"] == 4 and res["checkpoint_at"] == 2
    assert res["resumed_second_part"] == {
        "steps": 2, "identical": 2, "missing": 0, "max_abs_diff": 0.0, "first_different_step": None
    }  # fmt: skip
    assert all(res["checks"].values())
    # ... and the runs' own files agree: the final losses logged by the uninterrupted run and
    # by the resumed one (metrics.csv, written by the trainer) are the same number
    runs = work / "runs"
    final = {}
    for name in ("uninterrupted", "interrupted"):
        with (runs / name / "metrics.csv").open() as fh:
            rows = [row for row in csv.DictReader(fh)]
        assert rows[-1]["step"] == "4"
        final[name] = rows[-1]["loss"]
        assert (runs / name / "checkpoints" / "step_00000002" / "rank0.pt").is_file()
    assert final["uninterrupted"] == final["interrupted"]
    assert (runs / "interrupted" / "checkpoints" / "latest").read_text().strip() == "step_00000004"

    # partial_fc: the sampled centres and the weight size follow from the plan's numbers
    pfc = steps["partial_fc"]["result"]
    assert pfc["classes"] == 20_000
    assert pfc["sampled"]["sampled_centres"] == 2_000 and pfc["full"]["sampled_centres"] == 20_000
    assert pfc["sampled"]["weight_bytes"] == 20_000 * 512 * 4
    assert pfc["full_over_sampled_step_time"] > 0

    # export: parity through the SDK's embedder; re-checked here with ONNX Runtime and the
    # trained model.pt directly, on inputs of our own
    exp = steps["export"]["result"]
    assert exp["parity"]["passed"] and exp["parity"]["min_cosine"] >= 0.9999
    assert exp["sdk_embedder_providers"] == ["CPUExecutionProvider"]
    onnx_file = work / "export" / "mobilefacenet_npcface.onnx"
    assert exp["file_bytes"] == onnx_file.stat().st_size
    from npcface.training.train import load_model

    model = load_model(runs / "uninterrupted" / "model.pt")
    x = np.random.default_rng(5).uniform(-1, 1, (3, 3, 120, 120)).astype(np.float32)
    with torch.inference_mode():
        want = model(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.9999

    par = steps["parity_cuda"]["result"]
    assert par["fp32"]["min_cosine"] >= 0.9999
    assert par["fp16"] == "skipped: needs CUDA" and par["tf32"] == "skipped: needs CUDA"

    thr = steps["embed_throughput"]["result"]
    assert set(thr["fp32"]) == {"batch_1", "batch_2"}
    assert all(row["embedder_faces_per_s"] > 0 for row in thr["fp32"].values())
    assert thr["fp16"] == "skipped: needs CUDA"
    assert thr["anchor"]["faces_per_s"] == 6500

    fb = steps["provider_fallback"]["result"]
    assert fb["exported"]["embedder_cuda"].startswith("ProviderError: ")
    assert "CUDAExecutionProvider" in fb["exported"]["embedder_cuda"]
    assert any("CPUExecutionProvider" in line for line in fb["exported"]["auto_log"])
    assert all(fb["checks"].values())


# ----------------------------------------------------------------------------- the runner


def test_runner_records_failures_skips_and_failed_checks_and_goes_on(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
        from gpu_check_steps import QUICK, Context, Skip, Step
    finally:
        sys.path.remove(str(SCRIPT.parent))

    def boom(ctx):
        raise ValueError("planted failure")

    def skip(ctx):
        raise Skip("tensorrt not installed on this machine")

    def bad_check(ctx):
        return {"value": float("nan"), "checks": {"fine": True, "resume_reproduces_losses": False}}

    def good(ctx):
        return {"value": np.float32(2.5), "checks": {"fine": True}}

    out = tmp_path / "r.json"
    rec = gpu_check.Recorder(out, {"format": gpu_check.FORMAT})
    ctx = Context(QUICK, None, "no CUDA device (test)", tmp_path)
    steps = [
        Step("boom", boom, needs_device=False),
        Step("skip", skip, needs_device=False),
        Step("bad_check", bad_check, needs_device=False),
        Step("cuda_only", good),
        Step("good", good, needs_device=False),
    ]
    statuses = [gpu_check.run_step(s, ctx, rec, budget_s=1e9) for s in steps]
    assert statuses == ["failed", "skipped", "failed", "skipped", "ok"]
    data = json.loads(out.read_text())  # valid JSON although a value was NaN
    s = data["steps"]
    assert s["boom"]["error"] == "ValueError: planted failure"
    assert "planted failure" in s["boom"]["traceback"]
    assert s["skip"]["reason"] == "tensorrt not installed on this machine"
    assert s["bad_check"]["error"] == "check(s) failed: resume_reproduces_losses"
    assert s["bad_check"]["result"]["value"] == "nan"
    assert s["cuda_only"]["reason"] == "no CUDA device (test)"
    assert s["good"]["result"]["value"] == 2.5
    assert data["summary"]["failed_steps"] == ["boom", "bad_check"]
    assert (data["summary"]["ok"], data["summary"]["skipped"]) == (1, 2)

    late = gpu_check.run_step(Step("late", good, needs_device=False), ctx, rec, budget_s=0.0)
    long = Step("long", good, needs_device=False, expected_s=1e6)
    assert (late, gpu_check.run_step(long, ctx, rec, budget_s=1e5)) == ("skipped", "skipped")
    s = json.loads(out.read_text())["steps"]
    assert "time budget spent" in s["late"]["reason"]
    assert "needs about 1000000 s" in s["long"]["reason"]
