"""The trainer: backbone + Partial FC head, SGD with the paper's schedule, AMP, exact resume.

Single process::

    npcface train run configs/casia_mbf_npcface.yaml

Several processes / nodes (``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR;
gloo on CPU, NCCL on GPU)::

    torchrun --nproc-per-node 2 -m npcface.cli train run configs/casia_mbf_npcface.yaml
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-endpoint HOST:29500 \\
        -m npcface.cli train run CONFIG

Each rank holds the whole backbone (DDP) and a shard of the class centres (Partial FC).
Checkpoints are one file per rank (``output/checkpoints/step_XXXXXXXX/rank{r}.pt``) with the
backbone, this rank's centres and head buffers, optimizer, scheduler, grad scaler, epoch and
step, sampler position and RNG states, all loadable with ``torch.load(weights_only=True)``;
resuming needs the same world size. Resuming reproduces the uninterrupted run's losses
step for step (data order and flips depend only on the sampler's seed and position).

A resume applies changed optimizer and schedule settings and refuses, listing them, the
settings that fix the model or the data order (:data:`RESUME_FIXED`); checkpoints record
what ran. A NaN or infinite loss, gradient or batch-norm statistic stops the run before the
optimizer step (:class:`~npcface.training.errors.NonFiniteError`), and only finite weights
are ever checkpointed. Every image is decoded once before training (see
:mod:`npcface.training.data.check`).

The process group is created by :class:`Trainer` (never at import) and destroyed at the end
when the trainer created it.

This module is the step loop and its wiring; beside it, one job each:
:mod:`~npcface.training.checkpoint` (files, RNG states, what a resume may change),
:mod:`~npcface.training.schedule` (the learning rate), :mod:`~npcface.training.logbook`
(progress lines, CSV, TensorBoard) and :mod:`~npcface.training.modelcard` (the facts
export reads).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from npcface.fsutil import atomic_path

from .backbones import get_backbone
from .checkpoint import (
    CHECKPOINT_FORMAT,
    RESUME_FIXED,
    config_changes,
    fixed_setting,
    latest_folder,
    mark_latest,
    resolve,
    rng_state,
    set_rng_state,
)
from .config import TrainConfig
from .data import EpochSampler, FaceDataset, ImageCheck, build_dataset, check_images
from .errors import ConfigError, DataError, NonFiniteError, TrainingError
from .heads import get_head
from .logbook import Logbook
from .modelcard import model_card, write_model_card
from .partial_fc import PartialFC
from .schedule import lr_factor
from .verify import PairVerifier, VerificationResult

__all__ = [
    "CHECKPOINT_FORMAT",
    "RESUME_FIXED",
    "TrainResult",
    "Trainer",
    "config_changes",
    "load_model",
    "lr_factor",
]

log = logging.getLogger(__name__)

_TIMING_WARMUP_STEPS = 3  # steps excluded from the throughput figure (allocation, compile)


@dataclass
class TrainResult:
    """What a :meth:`Trainer.fit` call did.

    Attributes:
        step: global steps done when it returned.
        losses: ``(step, loss)`` of every step run by this call (step counted from 1).
        images_per_second: global training throughput after the first steps.
        data_wait_fraction: share of the step time spent waiting for the data loader.
        verification: the last verification result, if any ran.
        checkpoint: the last checkpoint folder written.
        output: the output folder.
        interrupted: stopped early by ``stop_at_step``.
        data_notes: what the data set left out (hidden files, empty identity folders,
            unreadable images), one line each.
        resume_changes: settings that differ from the checkpoint resumed from and were
            applied (``{key: (old, new)}``).
    """

    step: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    images_per_second: float = 0.0
    data_wait_fraction: float = 0.0
    verification: VerificationResult | None = None
    checkpoint: str | None = None
    output: str = ""
    interrupted: bool = False
    data_notes: list[str] = field(default_factory=list)
    resume_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """True (a 0-d bool tensor, no sync) when no tensor holds NaN or inf.

    Uses the max-abs norm (fused over the list where torch has ``_foreach_norm``): NaN and
    inf propagate, and unlike the 2-norm it never overflows for finite values.
    """
    tensors = [t.detach() for t in tensors if t.numel()]
    if not tensors:
        return torch.tensor(True)
    if hasattr(torch, "_foreach_norm"):
        norms = torch._foreach_norm(tensors, float("inf"))
    else:  # pragma: no cover - older torch
        norms = [t.abs().max() for t in tensors]
    return torch.isfinite(torch.stack([n.float() for n in norms])).all()


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)


class Trainer:
    """Builds everything a config describes and trains.

    Args:
        cfg: the job config (validated).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg.validate()
        self._owns_group = False
        self._setup_process()
        self._build()

    # ------------------------------------------------------------------ set-up
    def _setup_process(self) -> None:
        cfg = self.cfg
        world = int(os.environ.get("WORLD_SIZE", "1"))
        use_cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device: cuda requested but CUDA is not available")
        if world > 1 and not dist.is_initialized():
            backend = cfg.dist_backend
            if backend == "auto":
                backend = "nccl" if use_cuda else "gloo"
            dist.init_process_group(backend)
            self._owns_group = True
        distributed = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size() if distributed else 1
        self.rank = dist.get_rank() if distributed else 0
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            self.device = torch.device("cuda", local_rank)
        else:
            self.device = torch.device("cpu")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.rank)
        np.random.seed((cfg.seed + self.rank) % 2**32)
        random.seed(cfg.seed + self.rank)
        self.output = Path(cfg.output or Path("work_dirs") / cfg.name)

    def _amp(self) -> tuple[torch.dtype | None, bool]:
        mode = self.cfg.amp.mode
        if mode == "auto":
            if self.device.type == "cuda":
                mode = "fp16"
            elif (
                torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            ):
                mode = "bf16"
            else:
                mode = "off"
        if mode == "off":
            return None, False
        if mode == "fp16":
            return torch.float16, self.device.type == "cuda"
        return torch.bfloat16, False

    def _build(self) -> None:
        cfg = self.cfg
        bb = cfg.backbone
        self.dataset: FaceDataset = build_dataset(cfg.data, bb.input_size, cfg.seed, cache=False)
        self.data_check = self._check_images()
        if cfg.data.cache_in_memory:
            self.dataset.cache()
        self.data_notes = list(self.dataset.notes)  # each was logged where it arose
        self.num_classes = self.dataset.num_classes
        if len(self.dataset) < cfg.optim.batch_size * self.world_size:
            raise ConfigError(
                f"data set of {len(self.dataset)} images is smaller than one global batch "
                f"({cfg.optim.batch_size} x {self.world_size})"
            )
        self.sampler = EpochSampler(len(self.dataset), self.world_size, self.rank, True, cfg.seed)
        workers = cfg.data.num_workers
        self.loader = DataLoader(
            self.dataset,
            batch_size=cfg.optim.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=cfg.data.prefetch_factor if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None,
        )
        self.steps_per_epoch = self.sampler.num_samples // cfg.optim.batch_size
        o = cfg.optim
        if o.max_steps > 0:
            self.total_steps = o.max_steps
        else:
            self.total_steps = math.ceil(o.epochs * self.steps_per_epoch)
        self.set_total_steps(self.total_steps)

        torch.manual_seed(cfg.seed)  # identical backbone init on every rank
        self.backbone = get_backbone(bb.name, bb.input_size, bb.embedding_size, **bb.kwargs)
        self.backbone.to(self.device)
        if bb.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.head = get_head(cfg.head.name, **cfg.head.params)
        self.pfc = PartialFC(
            self.head,
            bb.embedding_size,
            self.num_classes,
            cfg.partial_fc.sample_rate,
            init_std=cfg.partial_fc.init_std,
            init_row_norm=cfg.partial_fc.init_row_norm,
            seed=cfg.seed,
            fc_autocast=cfg.partial_fc.fc_autocast,
        ).to(self.device)
        torch.manual_seed(cfg.seed + self.rank)
        model: nn.Module = self.backbone
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if bb.compile:
            model = torch.compile(model)
        self.model = model
        self.optimizer = torch.optim.SGD(
            [{"params": self.backbone.parameters()}, {"params": self.pfc.parameters()}],
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, self.total_steps, self.milestones, o.gamma, self.warmup_steps),
        )
        self.amp_dtype, use_scaler = self._amp()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.step = 0
        self.epoch = 0
        self.epoch_step = 0
        self.skipped_in_row = 0  # GradScaler skips in a row (fp16)
        self.history: list[dict[str, Any]] = []  # settings changed on resume, by step
        self.resume_changes: dict[str, tuple[Any, Any]] = {}
        self.verifier: PairVerifier | None = None
        if cfg.eval.root and self.rank == 0:
            self.verifier = PairVerifier(cfg.eval, bb.input_size)
        log.info(
            "rank %d/%d on %s: %d images, %d classes, %d steps/epoch, %d steps, amp=%s",
            self.rank,
            self.world_size,
            self.device,
            len(self.dataset),
            self.num_classes,
            self.steps_per_epoch,
            self.total_steps,
            self.amp_dtype,
        )

    def _check_images(self) -> ImageCheck | None:
        """Decode every image once before training (rank 0; the result goes to every rank).

        Unreadable images are left out and listed (``data.bad_images: skip``) or refused
        with their names (``error``), so a run never dies halfway on a bad file.
        """
        cfg = self.cfg
        if not cfg.data.check_images:
            return None
        result = None
        if self.rank == 0:
            result = check_images(
                self.dataset, cfg.data.num_workers, self.output / "data_check.json"
            )
        if self.world_size > 1:
            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
        if result is None or not result.bad:
            return result
        if cfg.data.bad_images == "error":
            shown = "; ".join(why for _, _, why in result.bad[:5])
            more = f" (and {len(result.bad) - 5} more)" if len(result.bad) > 5 else ""
            raise DataError(
                f"{len(result.bad)} of {result.checked} training images cannot be read: "
                f"{shown}{more}; list in {self.output / 'data_check.json'}; remove them or "
                "set data.bad_images=skip"
            )
        self.dataset.drop(result.indices)
        self.dataset.notes += result.notes()
        if self.rank == 0:
            log.warning("%s", "\n".join(result.notes()))
        return result

    def set_total_steps(self, total_steps: int) -> None:
        """Set the run length; milestones and warm-up scale with it (epochs -> steps as
        ``total_steps / optim.epochs``), e.g. for a time budget measured after a few steps.
        Takes effect from the next step (the scheduler reads these values each step)."""
        o = self.cfg.optim
        self.total_steps = int(total_steps)
        to_step = self.total_steps / o.epochs
        self.milestones = [round(m * to_step) for m in o.milestones]
        self.warmup_steps = round(o.warmup_epochs * to_step)

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_root(self) -> Path:
        return self.output / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        """Everything this rank needs to continue exactly (weights_only-loadable)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "rank": self.rank,
            "world_size": self.world_size,
            "backbone": self.backbone.state_dict(),
            "partial_fc": self.pfc.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "model_card": model_card(self.cfg),
            "num_images": len(self.dataset),
            "num_classes": self.num_classes,
            "history": self.history,
        }

    def _all_finite(self, local: bool) -> bool:
        """``local`` on every rank (one all-reduce when distributed)."""
        if self.world_size == 1:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)

    def nonfinite_tensors(self) -> list[str]:
        """Names of this rank's weights and buffers (backbone, head) holding NaN or inf."""
        bad = []
        for prefix, module in (("backbone.", self.backbone), ("partial_fc.", self.pfc)):
            for name, t in module.state_dict().items():
                if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                    bad.append(prefix + name)
        return bad

    def last_checkpoint(self) -> Path | None:
        """The step folder ``latest`` names, if any."""
        return latest_folder(self._ckpt_root())

    def save_checkpoint(self) -> Path:
        """Write this rank's file of ``checkpoints/step_XXXXXXXX/`` and return the folder.

        Only finite weights are written: a model with a NaN or infinite weight raises
        :class:`NonFiniteError` and nothing is written or rotated, so rotation never
        deletes the last finite checkpoint for a broken one. Rotation keeps the newest
        ``log.keep_checkpoints`` folders up to this step; folders of later steps (left by
        an earlier run when resuming from an older checkpoint) are not touched.
        """
        bad = self.nonfinite_tensors()
        if not self._all_finite(not bad):
            last = self.last_checkpoint()
            raise NonFiniteError(
                f"step {self.step}: the model holds NaN/inf values "
                f"({len(bad)} tensors on rank {self.rank}, e.g. {', '.join(bad[:3]) or '-'}); "
                f"not saved. Last finite checkpoint: {last or 'none'}"
            )
        folder = self._ckpt_root() / f"step_{self.step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / f"rank{self.rank}.pt") as tmp:
            torch.save(self.state_dict(), tmp)
        if self.world_size > 1:
            dist.barrier()
        if self.rank == 0:
            mark_latest(self._ckpt_root(), folder, self.cfg.log.keep_checkpoints)
        return folder

    def load_checkpoint(self, resume: str | Path) -> None:
        """Restore this rank from a checkpoint folder, a rank file, or ``"latest"``."""
        path = resolve(self._ckpt_root(), resume, self.rank)
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{path}: unsupported checkpoint format {state.get('format')}")
        if state["world_size"] != self.world_size:
            raise TrainingError(
                f"{path} was written by {state['world_size']} process(es); resume with the "
                f"same number (now {self.world_size})"
            )
        changes = config_changes(state.get("config") or {}, self.cfg.to_dict())
        fixed = {k: v for k, v in changes.items() if fixed_setting(k)}
        if fixed:
            listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in fixed.items())
            raise ConfigError(
                f"cannot resume from {path} with changed {listed}: these fix the model, the "
                "class centres or the data order. Put them back, or start a new run "
                "(another --output) from scratch"
            )
        for key, what in (("num_images", len(self.dataset)), ("num_classes", self.num_classes)):
            if key in state and state[key] != what:
                raise ConfigError(
                    f"cannot resume from {path}: it was trained on {state[key]} "
                    f"{key.split('_')[1]}, the data set now has {what} (files added, removed "
                    "or found unreadable); start a new run"
                )
        self.backbone.load_state_dict(state["backbone"])
        self.pfc.load_state_dict(state["partial_fc"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        set_rng_state(state["rng"])
        self.history = list(state.get("history") or [])
        self._apply_optim_settings()
        self.resume_changes = changes
        if changes:
            self.history.append(
                {
                    "step": self.step,
                    "changes": {k: [repr(a), repr(b)] for k, (a, b) in changes.items()},
                }
            )
            log.warning(
                "resuming from %s with changed settings, applied from step %d: %s",
                path,
                self.step + 1,
                ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()),
            )
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)

    def _apply_optim_settings(self) -> None:
        """Set the optimizer's and scheduler's hyper-parameters from the config (after a
        checkpoint's state overwrote them with the values it was saved with)."""
        o = self.cfg.optim
        groups = self.optimizer.param_groups
        for g in groups:
            g["initial_lr"], g["momentum"], g["weight_decay"] = o.lr, o.momentum, o.weight_decay
        self.scheduler.base_lrs = [o.lr] * len(groups)
        step = self.scheduler.last_epoch  # the lr of the next step is lr * factor(step)
        factor = lr_factor(step, self.total_steps, self.milestones, o.gamma, self.warmup_steps)
        for g in groups:
            g["lr"] = o.lr * factor
        self.scheduler._last_lr = [g["lr"] for g in groups]

    def export_model(self, path: str | Path | None = None) -> Path:
        """Save the backbone with the facts an exporter needs (``model.pt``)."""
        bb = self.cfg.backbone
        path = Path(path) if path else self.output / "model.pt"
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "backbone": bb.name,
                "backbone_kwargs": dict(bb.kwargs),
                "input_size": bb.input_size,
                "embedding_size": bb.embedding_size,
                "channel_order": "RGB",
                "mean": self.cfg.data.mean,
                "std": self.cfg.data.std,
                "head": self.cfg.head.name,
                "step": self.step,
                "model_card": model_card(self.cfg),
                "state_dict": self.backbone.state_dict(),
            },
            path,
        )
        return path

    # ------------------------------------------------------------------ training
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        x = x.float().sub_(cfg.data.mean).div_(cfg.data.std)  # NHWC memory = channels_last
        if not cfg.backbone.channels_last:
            x = x.contiguous()
        with self._autocast():
            emb = self.model(x)
        loss = self.pfc(emb.float(), labels.to(self.device, non_blocking=True))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.backbone.parameters(), cfg.optim.grad_clip_norm)
        self._check_finite(loss)
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped when the gradients hold inf/NaN
            self.scaler.update()
            self._count_skip(self.scaler.get_scale() < scale)
        else:
            self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop before a NaN/inf loss or gradient reaches the weights.

        Without a grad scaler a non-finite loss or gradient raises
        :class:`NonFiniteError` (nothing is updated). With fp16's GradScaler a non-finite
        *gradient* is the scaler's business (it skips the step and lowers its scale; see
        :meth:`_count_skip`), but a non-finite *loss* still stops the run: the forward pass
        itself broke, and no scale fixes that.
        """
        loss = loss.detach()
        stats = [b for b in self.backbone.buffers() if b.is_floating_point()]
        tensors = {"loss": [loss], "batch-norm statistics": stats}
        if not self.scaler.is_enabled():
            grads = [p.grad for g in self.optimizer.param_groups for p in g["params"]]
            tensors["gradient"] = [g for g in grads if g is not None]
        flags = {w: _finite(ts) for w, ts in tensors.items() if ts}
        finite = dict(zip(flags, torch.stack(list(flags.values())).tolist(), strict=True))
        if self._all_finite(all(finite.values())):
            return
        what = " and ".join(w for w, ok in finite.items() if not ok) or "gradient on another rank"
        verb = "are" if " and " in what or what.endswith(("statistics", "rank")) else "is"
        last = self.last_checkpoint()
        raise NonFiniteError(
            f"step {self.step + 1}: the {what} {verb} not finite (loss {float(loss):.4g}, lr "
            f"{self.optimizer.param_groups[0]['lr']:.4g}); the run stopped before updating "
            f"the weights. Last checkpoint: {last or 'none'}. Lower optim.lr, add "
            "optim.warmup_epochs or optim.grad_clip_norm, and resume with --resume "
            f"{last or 'CKPT'} --set optim.lr=..."
        )

    def _count_skip(self, skipped: bool) -> None:
        """Bound the steps GradScaler skips in a row (``amp.max_skipped_steps``)."""
        self.skipped_in_row = self.skipped_in_row + 1 if skipped else 0
        limit = self.cfg.amp.max_skipped_steps
        if skipped:
            log.warning(
                "step %d: inf/NaN gradients, step skipped by the grad scaler (%d in a row, "
                "scale now %g)",
                self.step + 1,
                self.skipped_in_row,
                self.scaler.get_scale(),
            )
        if self.skipped_in_row > limit:
            raise NonFiniteError(
                f"step {self.step + 1}: the grad scaler skipped {self.skipped_in_row} steps "
                f"in a row for inf/NaN gradients (amp.max_skipped_steps = {limit}); the run "
                f"diverged. Last checkpoint: {self.last_checkpoint() or 'none'}"
            )

    def verify(self) -> VerificationResult | None:
        """Run the pairs protocol on rank 0 (other ranks return None)."""
        if self.verifier is None:
            return None
        return self.verifier(
            self.backbone,
            device=self.device,
            autocast_dtype=self.amp_dtype,
            mean=self.cfg.data.mean,
            std=self.cfg.data.std,
            channels_last=self.cfg.backbone.channels_last,
        )

    def fit(
        self,
        resume: str | Path | None = None,
        stop_at_step: int | None = None,
        progress: bool = False,
    ) -> TrainResult:
        """Train to the configured number of steps.

        Every ``log.every_steps`` steps, rank 0 logs (``logging``, INFO) step, loss, lr,
        images/s and the estimated time left, and writes them to ``metrics.csv`` (and
        TensorBoard when installed).

        Args:
            resume: checkpoint folder / rank file / ``"latest"`` to continue from.
            stop_at_step: save a checkpoint and return after this global step (an
                "interruption", for tests and time-sliced jobs).
            progress: show a tqdm bar of the steps on rank 0 (loss, lr and images/s beside
                it), for a terminal.

        Returns:
            A :class:`TrainResult` (losses of this call, throughput, last verification).
        """
        if resume:
            self.load_checkpoint(resume)
        cfg = self.cfg
        if self.rank == 0:
            self.output.mkdir(parents=True, exist_ok=True)
            write_model_card(self.output, cfg)  # what an exporter needs, guessing nothing
        result = TrainResult(
            step=self.step,
            output=str(self.output),
            data_notes=list(self.data_notes),
            resume_changes=dict(self.resume_changes),
        )
        logger = Logbook(self.output, cfg, enabled=self.rank == 0, start_step=self.step)
        global_batch = cfg.optim.batch_size * self.world_size
        timed_steps, timed_time, wait_time = 0, 0.0, 0.0
        if self.epoch_step >= self.steps_per_epoch:
            self.epoch, self.epoch_step = self.epoch + 1, 0
        from tqdm import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            disable=not progress or self.rank != 0,
            dynamic_ncols=True,
        )
        try:
            while self.step < self.total_steps:
                self.sampler.set_epoch(self.epoch)
                self.sampler.skip(self.epoch_step * cfg.optim.batch_size)
                t_wait = time.perf_counter()
                for images, labels in self.loader:
                    t0 = time.perf_counter()
                    lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses
                    loss = self._train_step(images, labels)
                    loss_value = float(loss)
                    t1 = time.perf_counter()
                    self.step += 1
                    self.epoch_step += 1
                    result.losses.append((self.step, loss_value))
                    bar.update(1)
                    if len(result.losses) > _TIMING_WARMUP_STEPS:
                        timed_steps += 1
                        timed_time += t1 - t_wait
                        wait_time += t0 - t_wait
                    if self.step % cfg.log.every_steps == 0 or self.step == self.total_steps:
                        ips = global_batch * timed_steps / timed_time if timed_time else 0.0
                        left = self.total_steps - self.step
                        eta = left * timed_time / timed_steps if timed_steps else None
                        logger.log_step(
                            self.step,
                            self.total_steps,
                            self.epoch + self.epoch_step / self.steps_per_epoch,
                            loss_value,
                            lr,
                            ips,
                            eta,
                        )
                        bar.set_postfix(
                            loss=f"{loss_value:.4f}", lr=f"{lr:.5f}", img_s=f"{ips:.1f}"
                        )
                    if cfg.eval.every_steps > 0 and self.step % cfg.eval.every_steps == 0:
                        self._verify_and_log(logger, result)
                    last = self.step >= self.total_steps
                    epoch_end = self.epoch_step >= self.steps_per_epoch
                    every = cfg.log.checkpoint_every_steps
                    if (every > 0 and self.step % every == 0) or (every == 0 and epoch_end):
                        result.checkpoint = str(self.save_checkpoint())
                    if stop_at_step is not None and self.step >= stop_at_step and not last:
                        if result.checkpoint != str(self._ckpt_root() / f"step_{self.step:08d}"):
                            result.checkpoint = str(self.save_checkpoint())
                        result.interrupted = True
                        return self._finish(
                            result, timed_steps, timed_time, wait_time, global_batch
                        )
                    if last or epoch_end:
                        break
                    t_wait = time.perf_counter()
                if self.epoch_step >= self.steps_per_epoch:
                    self.epoch, self.epoch_step = self.epoch + 1, 0
            final = str(self._ckpt_root() / f"step_{self.step:08d}")
            if result.checkpoint != final:
                result.checkpoint = str(self.save_checkpoint())
            if cfg.eval.every_steps == 0 or self.step % cfg.eval.every_steps != 0:
                self._verify_and_log(logger, result)
            if self.rank == 0:
                self.export_model()
            return self._finish(result, timed_steps, timed_time, wait_time, global_batch)
        except DataError as exc:  # a file that broke after the check (or checks are off)
            raise DataError(f"step {self.step + 1}: {_worker_message(exc)}") from None
        finally:
            bar.close()
            logger.close()

    def _finish(self, result, timed_steps, timed_time, wait_time, global_batch) -> TrainResult:
        result.step = self.step
        if timed_time > 0:
            result.images_per_second = global_batch * timed_steps / timed_time
            result.data_wait_fraction = wait_time / timed_time
        return result

    def _verify_and_log(self, logger: Logbook, result: TrainResult) -> None:
        res = self.verify()
        if res is not None:
            result.verification = res
            logger.log_eval(self.step, res)
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this trainer created it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def _worker_message(exc: BaseException) -> str:
    """The error line of an exception a DataLoader worker re-raised (its message holds the
    worker's whole traceback), else the message itself."""
    text = str(exc)
    if "Traceback" not in text:
        return text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else text
    head, sep, msg = last.partition(": ")
    return msg if sep and "Error" in head else last


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a backbone from a ``model.pt`` written by :meth:`Trainer.export_model`."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    model = get_backbone(
        state["backbone"], state["input_size"], state["embedding_size"], **state["backbone_kwargs"]
    )
    model.load_state_dict(state["state_dict"])
    return model.eval()


def train(
    cfg: TrainConfig, resume: str | Path | None = None, progress: bool = False
) -> TrainResult:
    """Build a :class:`Trainer` for ``cfg``, fit (``progress``: a tqdm bar), and tear down
    the process group."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit(resume=resume, progress=progress)
    finally:
        trainer.close()
