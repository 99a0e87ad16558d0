"""Training configuration: typed dataclasses with the paper's defaults, loaded from YAML.

A job config is a small YAML file that overrides the defaults below (arcface_torch style).
It may name another YAML file to start from with ``base: other.yaml`` (a path relative to
the job file); chains are allowed. Unknown keys and wrong types are errors, never silently
ignored. The output folder defaults to ``work_dirs/<job file stem>``.

Paper: Zeng et al., "NPCFace" (https://arxiv.org/abs/2007.10172), section 4.1: faces aligned
by five landmarks to 120x120 RGB, (x - 127.5) / 128, random horizontal flip; SGD with
momentum 0.9, weight decay 5e-4, lr 0.1; CASIA-WebFace batch 128, lr / 10 at epochs 16, 24,
28, stop at 30 (MS1M-v1c: batch 512, 8/14/18, stop at 20).

This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "AmpConfig",
    "BackboneConfig",
    "DataConfig",
    "EvalConfig",
    "HeadConfig",
    "LogConfig",
    "OptimConfig",
    "PartialFCConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
]


@dataclass
class BackboneConfig:
    """The embedding network."""

    name: str = "mobilefacenet"  # paper: MobileFaceNet for ablations, Attention-56 main
    input_size: int = 120  # paper: 120x120 aligned crops (insightface convention: 112)
    embedding_size: int = 512  # paper: 512-d
    kwargs: dict[str, Any] = field(default_factory=dict)  # architecture options (width...)
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU and GPU
    compile: bool = False  # torch.compile the backbone (slow first steps, faster later)


@dataclass
class HeadConfig:
    """The margin head; ``params`` override the head's own (paper-referenced) defaults."""

    name: str = "npcface"
    params: dict[str, Any] = field(default_factory=dict)  # e.g. {s: 32, m0: 0.4, m1: 0.2}


@dataclass
class PartialFCConfig:
    """Class centres: sharding over ranks and negative sampling."""

    sample_rate: float = 1.0  # 1.0 = every centre each step (model parallel only)
    init_std: float = 0.01  # N(0, std) centre init (arcface_torch)
    init_row_norm: float = 1.0  # then rescale rows to this norm (the NPCFace authors' FaceX-Zoo
    # code: unit-norm centres); 0 keeps the N(0, std) norms (arcface_torch)
    fc_autocast: bool = False  # run the cosine matmul under autocast (GPU fp16 speed-up)


@dataclass
class DataConfig:
    """Training data.

    ``dataset``: ``synthetic`` (random class-coloured images, no files: smoke runs and
    tests), ``folder`` (``root/<identity>/<image>``), ``list`` (``list_file`` lines
    ``path label``, paths relative to ``root``) or ``recordio`` (insightface
    ``root/train.rec`` + ``train.idx``, or ``root`` = the ``.rec`` path).
    """

    dataset: str = "synthetic"
    root: str = ""
    list_file: str = ""
    num_workers: int = 2  # DataLoader worker processes (0 = load in the main process)
    prefetch_factor: int = 4  # batches prefetched per worker
    flip_prob: float = 0.5  # paper: random horizontal flip with p = 0.5
    mean: float = 127.5  # paper: (x - 127.5) / 128 on RGB pixels
    std: float = 128.0
    cache_in_memory: bool = False  # decode every image once into RAM (small data sets)
    synthetic_classes: int = 64  # synthetic data set size
    synthetic_images: int = 1024
    check_images: bool = True  # decode every image once before training with the SDK's
    # strict decoder (result reused while the files are unchanged: output/data_check.json)
    bad_images: str = "skip"  # what the check does with unreadable images: "skip" (leave
    # them out, listed in the log and data_check.json) or "error" (refuse to start)


@dataclass
class OptimConfig:
    """SGD and its learning-rate schedule (paper: CASIA-WebFace schedule)."""

    batch_size: int = 128  # per process; paper: 128 in all on CASIA, 512 on MS1M
    lr: float = 0.1  # paper
    momentum: float = 0.9  # paper
    weight_decay: float = 5e-4  # paper
    epochs: float = 30.0  # paper (CASIA): stop at 30
    milestones: list[float] = field(default_factory=lambda: [16.0, 24.0, 28.0])  # epochs
    gamma: float = 0.1  # paper: lr / 10 at each milestone
    warmup_epochs: float = 0.0  # linear warm-up from 0 (not in the paper; arcface_torch uses it)
    max_steps: int = 0  # >0: stop after this many steps and read milestones as fractions
    grad_clip_norm: float = 0.0  # clip the backbone's gradient norm; 0 = off (paper: no
    # clipping; arcface_torch clips at 5)


@dataclass
class AmpConfig:
    """Mixed precision for the backbone; heads always run in float32."""

    mode: str = "auto"  # auto: fp16 + GradScaler on CUDA, bf16 on CPUs with native bf16
    # ("off", "bf16", "fp16" force a choice)
    max_skipped_steps: int = 20  # fp16 + GradScaler: steps in a row the scaler may skip for
    # inf/NaN gradients (lowering its scale each time) before the run stops with an error


@dataclass
class EvalConfig:
    """Periodic verification on a pairs protocol (rank 0 only)."""

    protocol: str = "lfw"  # "lfw" (pairs.txt format) or "csv" (npcface.eval.read_pairs_csv)
    root: str = ""  # aligned crops in LFW layout: root/images/<name>/<name>_NNNN.jpg
    pairs_file: str = ""  # pairs.txt path (absolute or relative to root); csv path for csv
    every_steps: int = 0  # 0 = only at the end of training
    flip_fusion: bool = True  # embedding = emb(image) + emb(flipped image)
    batch_size: int = 128
    max_pairs: int = 0  # >0: evaluate on the first pairs only (quick checks)


@dataclass
class LogConfig:
    """Logging and checkpoints."""

    every_steps: int = 20  # log loss / lr / throughput every N steps
    tensorboard: bool = True  # needs the 'tensorboard' package (npcface[train])
    checkpoint_every_steps: int = 0  # 0 = at the end of every epoch only
    keep_checkpoints: int = 2  # how many step folders to keep (0 = all)


@dataclass
class TrainConfig:
    """A whole training job."""

    name: str = "npcface"
    output: str = ""  # default: work_dirs/<job file stem or name>
    seed: int = 0
    device: str = "auto"  # auto: cuda if available else cpu
    dist_backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU (torchrun sets the env)
    threads: int = 0  # torch intra-op threads per process (0 = torch's default)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    partial_fc: PartialFCConfig = field(default_factory=PartialFCConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    amp: AmpConfig = field(default_factory=AmpConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> TrainConfig:
        """Check values that types cannot; returns self. Raises :class:`ConfigError`."""
        checks = [
            (self.data.dataset in ("synthetic", "folder", "list", "recordio"), "data.dataset"),
            (self.amp.mode in ("auto", "off", "bf16", "fp16"), "amp.mode"),
            (self.dist_backend in ("auto", "gloo", "nccl"), "dist_backend"),
            (0.0 < self.partial_fc.sample_rate <= 1.0, "partial_fc.sample_rate"),
            (self.optim.batch_size > 0, "optim.batch_size"),
            (self.optim.epochs > 0 or self.optim.max_steps > 0, "optim.epochs/max_steps"),
            (0.0 <= self.data.flip_prob <= 1.0, "data.flip_prob"),
            (self.eval.protocol in ("lfw", "csv"), "eval.protocol"),
            (self.backbone.input_size >= 32, "backbone.input_size"),
            (self.data.bad_images in ("skip", "error"), "data.bad_images"),
            (self.amp.max_skipped_steps >= 0, "amp.max_skipped_steps"),
        ]
        bad = [name for ok, name in checks if not ok]
        if bad:
            raise ConfigError(f"invalid config value(s): {', '.join(bad)}")
        if sorted(self.optim.milestones) != list(self.optim.milestones):
            raise ConfigError("optim.milestones must be increasing")
        return self


# ----------------------------------------------------------------------------- loading

_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _EXP_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 and 1e8 (no dot) as strings
    if tp in (int, float, str, bool) and (type(value) is tp):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {unknown}; valid keys: {sorted(names)}"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)  # nested sections were built from their own defaults


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a (possibly partial) mapping."""
    return _from_dict(TrainConfig, data, "").validate()


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("kwargs", "params"):
            out[k] = _deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml is in the train extra
        from npcface.errors import MissingExtraError

        raise MissingExtraError("training configs", "train", "yaml") from exc
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config base chain loops at {path}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        data = _deep_merge(_read_yaml(path.parent / str(base), (*seen, path)), data)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings (values parsed as YAML scalars) to a mapping."""
    import yaml

    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(raw)
        parts = key.split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML job config (following ``base:`` chains) into a validated config.

    Args:
        path: the job YAML file.
        overrides: optional ``section.key=value`` strings applied last.

    Raises:
        ConfigError: missing file, unknown key, wrong type or invalid value.
    """
    path = Path(path)
    data = _read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides)
    cfg = config_from_dict(data)
    if not cfg.output:
        cfg.output = str(Path("work_dirs") / path.stem)
    return cfg
