"""Side-by-side comparison of model variants: LFW accuracy and CPU speed on this machine.

Used by ``npcface export quantize --report`` and ``bench/quantize_report.py`` (fp32 vs fp16
vs INT8), and by ``npcface export onnx --lfw`` (torch vs the exported file through
:class:`~npcface.FaceRecognizer`).

Every variant sees the same aligned crops (detected once, ``center`` face policy as in
``npcface eval lfw``), is scored with :func:`npcface.eval.lfw.pair_scores` (a pair with a
missed detection scores -1) and the LFW 10-fold protocol. Speed is measured with the
variants interleaved round by round, so load from other processes hits all of them alike.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from npcface.modelinfo import RecognizerInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LfwCrops:
    """Aligned crops of the LFW images used by a set of pairs.

    Attributes:
        pairs: the pairs (possibly a per-fold subset).
        paths: distinct image paths, sorted.
        crops: (len(paths), S, S, 3) uint8 BGR; zero where detection failed.
        failed: image path -> reason, for images without a usable face.
        size: crop side S.
    """

    pairs: list[Any]
    paths: list[Path]
    crops: np.ndarray
    failed: dict[Path, str]
    size: int


def subset_pairs(pairs: Sequence[Any], per_fold: int | None) -> list[Any]:
    """The first ``per_fold`` genuine and ``per_fold`` impostor pairs of every fold."""
    if per_fold is None:
        return list(pairs)
    kept: list[Any] = []
    count: dict[tuple[int, bool], int] = {}
    for p in pairs:
        k = (p.fold, p.same)
        if count.get(k, 0) < per_fold:
            kept.append(p)
            count[k] = count.get(k, 0) + 1
    return kept


def lfw_crops(
    lfw_dir: str | os.PathLike[str],
    sizes: Sequence[int],
    per_fold: int | None = None,
    config: Any = None,
    progress: bool = False,
) -> dict[int, LfwCrops]:
    """Detect each LFW image of the (subset of) pairs once and align it at every size
    (``progress``: a tqdm bar).

    Args:
        lfw_dir: LFW folder (``pairs.txt`` and ``images/``).
        sizes: crop sides wanted (e.g. 112 for SFace, 120 for npcface models).
        per_fold: keep only this many genuine and impostor pairs per fold (None: all 6,000).
        config: the pipeline (:class:`~npcface.config.RecognizerConfig`); default the
            inference default, as ``npcface eval lfw``.
    """
    from tqdm import tqdm

    from npcface.eval import read_lfw_pairs

    from .crops import pipeline

    pairs = subset_pairs(read_lfw_pairs(lfw_dir), per_fold)
    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})
    rec = pipeline(config)
    crops = {s: np.zeros((len(paths), s, s, 3), np.uint8) for s in sizes}
    failed: dict[Path, str] = {}
    t0 = time.perf_counter()
    for s in sizes:
        shown = tqdm(paths, desc=f"LFW crops {s}px", unit="img", disable=not progress)
        for r in rec.crop_many(shown, size=s, names=[str(p) for p in paths]):
            if r.ok:
                crops[s][r.index] = r.crop
            else:
                failed[Path(paths[r.index])] = str(r.error)
    log.info(
        "LFW: %d pairs, %d images, %d without a face, %.1f s",
        len(pairs),
        len(paths),
        len(failed),
        time.perf_counter() - t0,
    )
    return {s: LfwCrops(pairs, list(paths), crops[s], failed, s) for s in sizes}


def lfw_accuracy(
    data: LfwCrops,
    embed: Callable[[np.ndarray], np.ndarray],
    progress: bool = False,
    label: str = "embedding",
) -> Any:
    """:class:`npcface.eval.VerificationReport` of an embedding function on ``data``; the
    crops go to ``embed`` 256 at a time (``progress``: a tqdm bar named ``label``)."""
    from tqdm import tqdm

    from npcface.eval import evaluate_verification
    from npcface.eval.lfw import EmbeddingTable, pair_scores

    ok = np.array([p not in data.failed for p in data.paths])
    t0 = time.perf_counter()
    todo = data.crops[ok]
    parts = []
    with tqdm(total=len(todo), desc=label, unit="crop", disable=not progress) as bar:
        for start in range(0, len(todo), 256):
            parts.append(embed(todo[start : start + 256]))
            bar.update(len(parts[-1]))
    good = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    emb = np.zeros((len(data.paths), good.shape[1]), np.float32)
    emb[ok] = good
    table = EmbeddingTable(data.paths, emb, dict(data.failed), time.perf_counter() - t0)
    scores = pair_scores(data.pairs, table)
    labels = np.array([p.same for p in data.pairs])
    folds = np.array([p.fold for p in data.pairs])
    return evaluate_verification(scores, labels, folds, fars=(1e-2,))


@dataclass(frozen=True)
class VariantResult:
    """One model variant measured by :func:`compare_variants`.

    Attributes:
        name: variant label (``fp32``, ``fp16``, ``int8-qdq-pc``...).
        path: model file.
        size_mb: file size in MB.
        accuracy: LFW 10-fold mean accuracy in [0, 1].
        accuracy_std: population std over the folds.
        ms_per_face: batch size -> median milliseconds per face (best round in brackets
            of ``ms_per_face_best``).
        ms_per_face_best: batch size -> fastest round's milliseconds per face.
    """

    name: str
    path: str
    size_mb: float
    accuracy: float
    accuracy_std: float
    ms_per_face: dict[int, float]
    ms_per_face_best: dict[int, float]


@dataclass(frozen=True)
class ComparisonReport:
    """Variants side by side; the first one is the baseline (fp32).

    Attributes:
        model: model name.
        variants: results, baseline first.
        pairs: pairs evaluated.
        images: distinct images.
        failed_images: images without a detected face (their pairs score -1).
        threads: ONNX Runtime intra-op threads (0 = all cores).
        rounds: timing rounds per batch size.
        machine: CPU and core count.
        load_average: 1-minute load average before timing (other processes on the CPU).
    """

    model: str
    variants: tuple[VariantResult, ...]
    pairs: int
    images: int
    failed_images: int
    threads: int
    rounds: int
    machine: str
    load_average: float
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """A table: accuracy, delta vs baseline (points), ms/face, speed ratio vs baseline."""
        base = self.variants[0]
        batches = sorted(base.ms_per_face)
        head = ["variant", "MB", "LFW acc %", "delta pts"]
        for b in batches:
            head += [f"ms/face b{b}", f"x vs {base.name} b{b}"]
        lines = [
            f"{self.model}: {self.pairs} LFW pairs, {self.images} images "
            f"({self.failed_images} without a face), {self.machine}, threads "
            f"{self.threads or 'all'}, load average {self.load_average:.1f}, "
            f"median of {self.rounds} interleaved rounds",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for v in self.variants:
            row = [
                v.name,
                f"{v.size_mb:.1f}",
                f"{100 * v.accuracy:.2f} +- {100 * v.accuracy_std:.2f}",
                f"{100 * (v.accuracy - base.accuracy):+.2f}",
            ]
            for b in batches:
                row += [
                    f"{v.ms_per_face[b]:.2f}",
                    f"{base.ms_per_face[b] / v.ms_per_face[b]:.2f}",
                ]
            lines.append("| " + " | ".join(row) + " |")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def _time_variants(
    runners: Mapping[str, Any],
    x: np.ndarray,
    batches: Sequence[int],
    rounds: int,
    min_seconds: float,
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Median and best ms/face per variant and batch, variants interleaved each round."""
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in runners}
    for b in batches:
        xb = np.ascontiguousarray(x[:b]) if len(x) >= b else np.resize(x, (b, *x.shape[1:]))
        for r in runners.values():  # warm-up
            r.run(xb)
        for _ in range(rounds):
            for name, r in runners.items():
                n, t0 = 0, time.perf_counter()
                while True:
                    r.run(xb)
                    n += 1
                    dt = time.perf_counter() - t0
                    if dt >= min_seconds:
                        break
                samples[name][b].append(1000.0 * dt / (n * b))
    median = {n: {b: float(np.median(v)) for b, v in d.items()} for n, d in samples.items()}
    best = {n: {b: float(np.min(v)) for b, v in d.items()} for n, d in samples.items()}
    return median, best


class SplitBatches:
    """Runs a fixed-batch model on any batch by splitting it (how such a file must be used).

    Args:
        runner: a :class:`npcface.runtime.Runner` whose model takes exactly ``batch`` inputs.
        batch: that batch size.
    """

    def __init__(self, runner: Any, batch: int) -> None:
        self.inner = runner
        self.batch = int(batch)
        self.backend = runner.backend
        self.providers = runner.providers

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        parts = [self.inner.run(x[i : i + self.batch])[0] for i in range(0, len(x), self.batch)]
        return [np.concatenate(parts)]


def compare_variants(
    variants: Mapping[str, str | os.PathLike[str] | tuple[str | os.PathLike[str], str]],
    data: LfwCrops,
    info: RecognizerInfo | None = None,
    *,
    batches: Sequence[int] = (1, 32),
    rounds: int = 7,
    min_seconds: float = 0.2,
    threads: int | None = None,
    notes: Sequence[str] = (),
    progress: bool = False,
) -> ComparisonReport:
    """Accuracy and speed of ONNX variants of one model, side by side.

    Args:
        variants: label -> file (run on ONNX Runtime) or (file, backend) with backend
            "onnxruntime" or "opencv"; baseline (fp32) first. Files with a fixed batch
            axis are run in chunks of that batch.
        data: LFW crops at the model's input size (see :func:`lfw_crops`).
        info: model facts for files without npcface metadata (e.g. the prepared SFace).
        batches: batch sizes to time.
        rounds: interleaved timing rounds (the median is reported).
        min_seconds: minimum duration of one timing sample.
        threads: ONNX Runtime intra-op threads (None = all cores).
        notes: free text appended to the report.
        progress: a tqdm bar per variant's LFW pass.
    """
    from npcface.embed import Embedder

    embedders = {}
    paths = {}
    for name, spec in variants.items():
        path, backend = spec if isinstance(spec, tuple) else (spec, "onnxruntime")
        providers = "cpu" if backend == "onnxruntime" else None
        emb = Embedder(path, info=info, backend=backend, providers=providers, threads=threads)
        fixed = getattr(emb.runner, "input_shape", (None,))[0]
        if isinstance(fixed, int) and fixed > 0:
            emb.runner = SplitBatches(emb.runner, fixed)
        embedders[name], paths[name] = emb, Path(path)
    first = next(iter(embedders.values()))
    if first.input_size != data.size:
        raise ValueError(f"crops are {data.size} px, {first.name} wants {first.input_size}")
    results = {}
    for name, emb in embedders.items():
        rep = lfw_accuracy(data, emb.embed, progress=progress, label=f"LFW {name}")
        results[name] = rep
        log.info("%s: LFW %.2f%%", name, 100 * rep.accuracy_mean)
    ok = [i for i, p in enumerate(data.paths) if p not in data.failed]
    x = first.preprocess(data.crops[ok[: max(batches)]])
    load = os.getloadavg()[0]
    median, best = _time_variants(
        {n: e.runner for n, e in embedders.items()}, x, batches, rounds, min_seconds
    )
    out = []
    for name, path in paths.items():
        out.append(
            VariantResult(
                name=name,
                path=str(path),
                size_mb=path.stat().st_size / 1e6,
                accuracy=results[name].accuracy_mean,
                accuracy_std=results[name].accuracy_std,
                ms_per_face=median[name],
                ms_per_face_best=best[name],
            )
        )
    return ComparisonReport(
        model=first.name,
        variants=tuple(out),
        pairs=len(data.pairs),
        images=len(data.paths),
        failed_images=len(data.failed),
        threads=int(threads or 0),
        rounds=rounds,
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        load_average=load,
        notes=tuple(notes),
    )


class TorchEmbedder:
    """The :class:`npcface.embed.Embedder` interface over a torch module (for comparisons).

    Args:
        model: torch module (N, 3, S, S) -> (N, d).
        info: the preprocessing the model was trained with.
        batch_size: crops per forward pass.
    """

    def __init__(self, model: Any, info: RecognizerInfo, batch_size: int = 64) -> None:
        from .parity import reference_function

        self.info = info
        self.batch_size = batch_size
        self._run = reference_function(model)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def input_size(self) -> int:
        return self.info.input_size

    def embed(self, crops: np.ndarray, flip: bool = False) -> np.ndarray:
        """As :meth:`npcface.embed.Embedder.embed` (same batching and flip fusion)."""
        from npcface.embed import embed_crops

        from .crops import preprocess_crops

        def forward(x: np.ndarray) -> np.ndarray:
            return self._run(preprocess_crops(x, self.info))

        return embed_crops(forward, crops, self.info.embedding_size, self.batch_size, flip)


def torch_face_recognizer(model: Any, info: RecognizerInfo, config: Any = None) -> Any:
    """A :class:`npcface.FaceRecognizer` of ``config`` (default: the inference default)
    whose embedder is the torch model (same detection, alignment and face policy as the
    SDK), for ``npcface.eval.lfw.run_lfw_verification``."""
    from npcface.config import RecognizerConfig
    from npcface.recognizer import FaceRecognizer

    return FaceRecognizer.from_config(
        config or RecognizerConfig(), embedder=TorchEmbedder(model, info)
    )


def compare_torch_and_onnx(
    model: Any,
    onnx_path: str | os.PathLike[str],
    lfw_dir: str | os.PathLike[str],
    reference_info: RecognizerInfo | None = None,
    config: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """LFW verification of the torch model and of the exported file, both through
    :func:`npcface.eval.lfw.run_lfw_verification` (the SDK's evaluation; ``progress``: its
    tqdm bar), both in the pipeline of ``config`` (default: the inference default).

    The ONNX side is that pipeline with ``recognizer=onnx_path``: input size, normalisation
    and embedding size come from the file's metadata alone.

    Returns:
        ``{"torch": report, "onnx": report, "accuracy_delta": onnx - torch}``.
    """
    from dataclasses import replace

    from npcface.config import RecognizerConfig
    from npcface.eval.lfw import run_lfw_verification
    from npcface.recognizer import FaceRecognizer

    config = (config or RecognizerConfig()).resolved()
    onnx_rec = FaceRecognizer.from_config(
        replace(config, recognizer=str(onnx_path), backend="onnxruntime")
    )
    info = onnx_rec.info
    ref = reference_info or RecognizerInfo(
        name=f"{info.name} (torch)", input_size=info.input_size, embedding_size=info.embedding_size
    )
    torch_rec = torch_face_recognizer(model, ref, config)
    reports = {}
    for label, rec in (("torch", torch_rec), ("onnx", onnx_rec)):
        t0 = time.perf_counter()
        reports[label] = run_lfw_verification(
            rec, lfw_dir, policy=rec.face_policy, progress=progress
        )
        log.info(
            "%s: LFW %.2f%% (%.0f s)",
            label,
            100 * reports[label]["accuracy_mean"],
            time.perf_counter() - t0,
        )
    reports["accuracy_delta"] = reports["onnx"]["accuracy_mean"] - reports["torch"]["accuracy_mean"]
    return reports
