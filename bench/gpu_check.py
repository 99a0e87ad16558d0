"""Every GPU path of npcface on a real GPU, each step timed and recorded in one JSON file.

    bash bench/gpu_check.sh                          # the GPU machine: install, then this
    python bench/gpu_check.py --device cpu --quick   # the same plumbing on a CPU, in seconds
    python bench/gpu_check.py                        # no CUDA here: CUDA steps recorded skipped

Steps, in this order (``--steps`` picks some; details in ``gpu_check_steps.py``):

- ``environment``: versions, GPU, ONNX Runtime providers, carried wheels.
- ``train_resume``: MobileFaceNet-120 + NPCFace through ``npcface.training.Trainer``, fp16
  autocast + GradScaler, channels_last, 200 steps on synthetic data with a checkpoint at
  step 100; a second run interrupted at step 100 and resumed in a new trainer must give
  the uninterrupted run's losses step for step.
- ``export``: the trained model to ONNX (``npcface.export``), parity through the SDK's own
  embedder on ONNX Runtime CPU.
- ``parity_cuda``: the ONNX file against the torch model on CUDA, fp32 (min cosine >=
  0.9999), TF32 and fp16 (>= 0.999).
- ``embed_throughput``: faces/s of the export's torch reference embedder on the GPU at
  batch 1, 64 and 256, fp32 and fp16, and of the bare model on GPU-resident batches.
- ``provider_fallback``: ``FaceRecognizer(providers="cuda")`` with a CPU-only ONNX Runtime
  raises ProviderError; ``providers=None`` logs the CPU choice.
- ``partial_fc``: Partial FC over 1M classes at sample rate 0.1 against the full FC:
  memory and step time.
- ``train_compile``: images/s of the training step without and with torch.compile
  (interleaved rounds, median).
- ``onnxruntime_gpu``, ``tensorrt``, ``faiss_gpu``: run when those packages are importable,
  else recorded as "not installed on this machine".

A failing step records its error and traceback and the script goes on; the JSON file is
rewritten after every step, so a run cut short keeps what it measured. Exit status: 0 when
no step failed (skipped steps are fine), 1 when one did, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_steps import (
    FULL,
    NO_CUDA,
    QUICK,
    STEPS,
    Context,
    Skip,
    Step,
)

REPO = Path(__file__).resolve().parents[1]
CARRY_DIR = REPO / "bench" / "gpu_carry"
FORMAT = "npcface-gpu-check/1"
STATUSES = ("ok", "failed", "skipped")

log = logging.getLogger("gpu_check")


class Recorder:
    """The JSON record, rewritten atomically after every change."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "steps": {}, "summary": {}}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def set_step(self, name: str, record: dict[str, Any]) -> None:
        self.data["steps"][name] = record
        self.write()

    def write(self) -> None:
        steps = self.data["steps"].values()
        counts = {s: sum(r["status"] == s for r in steps) for s in STATUSES}
        self.data["summary"] = {
            **counts,
            "running": [n for n, r in self.data["steps"].items() if r["status"] == "running"],
            "failed_steps": [n for n, r in self.data["steps"].items() if r["status"] == "failed"],
            "seconds": round(self.elapsed(), 2),
        }
        self.data["finished_utc"] = _utc()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(_jsonable(self.data), indent=1, allow_nan=False) + "\n")
        os.replace(tmp, self.path)


def _utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017 - py3.10


def _jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, non-finite floats to strings."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, str | int | float | bool) or x is None:
        return x
    if isinstance(x, Path):
        return str(x)
    return repr(x)


def run_step(step: Step, ctx: Context, rec: Recorder, budget_s: float) -> str:
    """Run one step and record it; never raises (except KeyboardInterrupt)."""
    record: dict[str, Any] = {"status": "running", "started_utc": _utc()}
    if step.needs_device and ctx.device is None:
        record.update(status="skipped", reason=ctx.device_reason, seconds=0.0)
        rec.set_step(step.name, record)
        return "skipped"
    if rec.elapsed() + step.expected_s > budget_s:
        reason = (
            f"time budget spent ({rec.elapsed():.0f} s of --budget-s {budget_s:.0f}; "
            f"this step needs about {step.expected_s:.0f} s)"
        )
        record.update(status="skipped", reason=reason, seconds=0.0)
        rec.set_step(step.name, record)
        return "skipped"
    rec.set_step(step.name, record)
    log.info("step %s ...", step.name)
    t0 = time.perf_counter()
    try:
        result = step.run(ctx)
        failed = [k for k, ok in result.get("checks", {}).items() if not ok]
        if failed:
            record.update(status="failed", error=f"check(s) failed: {', '.join(failed)}")
        else:
            record["status"] = "ok"
        record["result"] = result
    except Skip as exc:
        record.update(status="skipped", reason=str(exc))
    except Exception as exc:  # every failure is recorded and the script goes on
        record.update(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(limit=12),
        )
        partial = getattr(exc, "partial_result", None)
        if partial:
            record["result"] = partial
    record["seconds"] = round(time.perf_counter() - t0, 3)
    rec.set_step(step.name, record)
    log.info("step %s: %s (%.1f s)", step.name, record["status"], record["seconds"])
    return record["status"]


# ----------------------------------------------------------------------------- set-up


def resolve_device(requested: str) -> tuple[str | None, str]:
    """(device, reason): "cuda", "cpu" or None (no CUDA device: CUDA steps are skipped)."""
    if requested == "cpu":
        return "cpu", "--device cpu: the CUDA steps run on the CPU"
    try:
        import torch
    except ImportError:
        if requested == "cuda":
            raise SystemExit("gpu_check: --device cuda, but torch is not installed") from None
        return None, f"{NO_CUDA} (torch is not installed)"
    if torch.cuda.is_available():
        return "cuda", f"CUDA device {torch.cuda.get_device_name(0)}"
    if requested == "cuda":
        raise SystemExit("gpu_check: --device cuda, but torch sees no CUDA device")
    return None, f"{NO_CUDA} (torch {torch.__version__} sees none)"


def load_crops(path: Path | None, n: int = 64) -> tuple[Any, str]:
    """Real aligned crops when a file is given (``--make-crops``), else synthetic faces-to-be."""
    import numpy as np

    if path is not None and path.is_file():
        crops = np.load(path)
        if crops.ndim != 4 or crops.shape[1:] != (120, 120, 3) or crops.dtype != np.uint8:
            raise SystemExit(f"gpu_check: {path} is not an (N, 120, 120, 3) uint8 crop array")
        return crops, f"{path.name}: {len(crops)} real aligned crops"
    import cv2

    rng = np.random.default_rng(0)
    crops = np.stack(
        [
            np.clip(
                cv2.resize(rng.uniform(0, 255, (6, 6, 3)).astype(np.float32), (120, 120))
                + rng.normal(0, 20, (120, 120, 3)),
                0,
                255,
            ).astype(np.uint8)
            for _ in range(n)
        ]
    )
    return crops, f"synthetic: {n} smooth random images (no carried crop file)"


def make_crops(out: Path, data: Path | None, limit: int) -> int:
    """Write ``limit`` real aligned 120x120 crops (the SDK's detector and aligner) to ``out``."""
    import numpy as np

    from npcface.export.crops import crops_from_folder, default_face_folder

    folder = data / "lfw" / "images" if data else default_face_folder()
    if folder is None or not folder.is_dir():
        print("gpu_check: no LFW images found (set NPCFACE_DATA or pass --data)", file=sys.stderr)
        return 2
    crops = crops_from_folder(folder, 120, limit=limit)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, crops)
    print(f"{out}: {len(crops)} aligned 120x120 crops from {folder} ({out.stat().st_size} bytes)")
    return 0


def carry_facts(carry: Path) -> dict[str, Any]:
    """Files carried next to the repository (wheels, crops) and their sizes."""
    files = sorted(p for p in carry.rglob("*") if p.is_file()) if carry.is_dir() else []
    items = [{"name": str(p.relative_to(carry)), "bytes": p.stat().st_size} for p in files]
    return {"dir": str(carry), "files": items, "bytes": sum(i["bytes"] for i in items)}


def install_facts() -> dict[str, Any]:
    """What ``gpu_check.sh`` did before starting this script (from its environment)."""
    env = os.environ
    return {
        "method": env.get("GPU_CHECK_INSTALL", "none (run directly, not through gpu_check.sh)"),
        "seconds": float(env.get("GPU_CHECK_INSTALL_SECONDS", "0") or 0),
        "wheels_installed": [w for w in env.get("GPU_CHECK_WHEELS", "").split() if w],
        "note": env.get("GPU_CHECK_INSTALL_NOTE", ""),
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None, step_names: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="gpu_check.py", description=__doc__.splitlines()[0], epilog=", ".join(step_names)
    )
    p.add_argument(
        "--device", choices=("auto", "cuda", "cpu"), default="auto",
        help="auto: CUDA if torch sees it, else the CUDA steps are skipped; cpu: run them "
        "on the CPU (plumbing check)",
    )  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU plumbing check)")
    p.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: $OUT/gpu_check.json)"
    )
    p.add_argument("--steps", default="", help="comma-separated subset of the steps (see below)")
    p.add_argument("--skip", default="", help="comma-separated steps not to run")
    p.add_argument("--budget-s", type=float, default=420.0, help="start no step after this")
    p.add_argument("--crops", type=Path, default=CARRY_DIR / "crops.npy")
    p.add_argument("--carry", type=Path, default=CARRY_DIR, help="carried files (recorded)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    p.add_argument("--keep-work", action="store_true")
    p.add_argument("--make-crops", type=Path, default=None, metavar="NPY",
                   help="write real aligned crops from LFW to NPY and exit")  # fmt: skip
    p.add_argument("--data", type=Path, default=None, help="shared data root for --make-crops")
    args = p.parse_args(argv)
    for opt in ("steps", "skip"):
        names = [s.strip() for s in getattr(args, opt).split(",") if s.strip()]
        unknown = sorted(set(names) - set(step_names))
        if unknown:
            p.error(
                f"--{opt}: unknown step(s) {', '.join(unknown)}; valid: {', '.join(step_names)}"
            )
        setattr(args, opt, names)
    return args


def default_out() -> Path:
    out = os.environ.get("OUT")
    return (
        Path(out) / "gpu_check.json" if out else REPO / "work_dirs" / "gpu_check" / "gpu_check.json"
    )


def main(argv: list[str] | None = None) -> int:
    names = [s.name for s in STEPS]
    args = parse_args(argv, names)
    # before torch loads: no OpenMP spin-wait stalls on shared CPUs; deterministic cuBLAS
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.make_crops:
        return make_crops(args.make_crops, args.data, 64)
    device, reason = resolve_device(args.device)
    plan = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="npcface-gpu-check-")) if args.work is None else args.work
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NPCFACE_HOME", str(work / "npcface_home"))
    out = args.out or default_out()
    crops, source = load_crops(args.crops)
    if len(crops) > plan.crops:
        crops, source = crops[: plan.crops], f"{source} ({plan.crops} used)"
    ctx = Context(plan, device, reason, work, crops=crops, crops_source=source)
    rec = Recorder(
        out,
        {
            "format": FORMAT,
            "command": [sys.executable, *sys.argv],
            "started_utc": _utc(),
            "host": platform.node(),
            "device": device,
            "device_reason": reason,
            "quick": bool(args.quick),
            "budget_s": args.budget_s,
            "plan": asdict(plan),
            "crops": source,
            "install": install_facts(),
            "carry": carry_facts(args.carry),
        },
    )
    selected = set(args.steps or names) - set(args.skip)
    try:
        for step in STEPS:
            if step.name in selected:
                run_step(step, ctx, rec, args.budget_s)
            else:
                rec.set_step(
                    step.name, {"status": "skipped", "reason": "not selected", "seconds": 0.0}
                )
    finally:
        rec.write()
        if not args.keep_work and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = rec.data["summary"]
    print(
        f"gpu_check: {summary['ok']} ok, {summary['failed']} failed, {summary['skipped']} "
        f"skipped in {summary['seconds']:.0f} s -> {out}"
    )
    for name, r in rec.data["steps"].items():
        detail = r.get("error") or r.get("reason") or ""
        print(f"  {name:18s} {r['status']:8s} {r.get('seconds', 0):7.1f} s  {detail[:100]}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
