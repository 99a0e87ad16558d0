"""The run's logbook: one progress line per logged step (step, loss, lr, images/s, ETA),
``metrics.csv`` and ``eval.csv`` in the output folder, and TensorBoard scalars when it is
installed; a resumed run continues the logs without repeating steps."""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path

from npcface.fsutil import atomic_path

from .config import TrainConfig
from .verify import VerificationResult

log = logging.getLogger("npcface.training.train")  # the trainer's progress lines


def truncate_log(path: Path, last_step: int) -> None:
    """Drop the rows of a CSV log (first column: step) after ``last_step``: a resume from
    an older checkpoint replays those steps and logs them again."""
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    keep = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= last_step]
    if len(keep) == len(rows):
        return
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(keep)
    log.info("%s: dropped %d rows after step %d", path.name, len(rows) - len(keep), last_step)


class Logbook:
    """CSV files (``metrics.csv``, ``eval.csv``) + TensorBoard + the ``logging`` module.

    A run that starts at step 0 starts new logs; a resumed run (``start_step`` > 0) first
    drops whatever the logs hold after ``start_step`` (steps a resume from an older
    checkpoint replays), so every step appears once. TensorBoard events from
    ``start_step + 1`` on are purged the same way.
    """

    def __init__(self, output: Path, cfg: TrainConfig, enabled: bool, start_step: int) -> None:
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        append = start_step > 0
        mode = "a" if append else "w"
        if append:
            truncate_log(output / "metrics.csv", start_step)
            truncate_log(output / "eval.csv", start_step)
        metrics = output / "metrics.csv"
        new = mode == "w" or not metrics.exists()
        self._metrics_fh = metrics.open(mode, newline="", encoding="utf-8")
        self.metrics = csv.writer(self._metrics_fh)
        if new:
            self.metrics.writerow(["step", "epoch", "loss", "lr", "images_per_s", "time"])
        evals = output / "eval.csv"
        new = mode == "w" or not evals.exists()
        self._eval_fh = evals.open(mode, newline="", encoding="utf-8")
        self.evals = csv.writer(self._eval_fh)
        if new:
            self.evals.writerow(["step", "accuracy", "std", "num_pairs", "skipped_pairs", "time"])
        if cfg.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = {"purge_step": start_step + 1} if append else {}
                self.tb = SummaryWriter(str(output / "tensorboard"), **purge)
            except ImportError:
                log.warning("tensorboard is not installed; logging to CSV only")

    def log_step(
        self,
        step: int,
        total: int,
        epoch: float,
        loss: float,
        lr: float,
        ips: float,
        eta: float | None,
    ) -> None:
        """One progress line (``eta``: seconds left, None before it can be estimated)."""
        if not self.enabled:
            return
        log.info(
            "step %d/%d epoch %.2f loss %.4f lr %.5f %.1f img/s ETA %s",
            step,
            total,
            epoch,
            loss,
            lr,
            ips,
            clock(eta),
        )
        self.metrics.writerow(
            [step, f"{epoch:.4f}", f"{loss:.6f}", f"{lr:.6g}", f"{ips:.2f}", f"{time.time():.1f}"]
        )
        self._metrics_fh.flush()
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/images_per_s", ips, step)

    def log_eval(self, step: int, res: VerificationResult) -> None:
        if not self.enabled:
            return
        log.info("step %d verification accuracy %.4f +- %.4f", step, res.accuracy, res.std)
        self.evals.writerow(
            [
                step,
                f"{res.accuracy:.6f}",
                f"{res.std:.6f}",
                res.num_pairs,
                res.skipped_pairs,
                f"{time.time():.1f}",
            ]
        )
        self._eval_fh.flush()
        if self.tb is not None:
            self.tb.add_scalar("eval/accuracy", res.accuracy, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics_fh.close()
        self._eval_fh.close()
        if self.tb is not None:
            self.tb.close()


def clock(seconds: float | None) -> str:
    """Seconds as h:mm:ss (m:ss under an hour); "?" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
