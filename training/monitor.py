"""What a run reports: ``metrics.jsonl`` lines (rank 0), optional TensorBoard scalars, the CMW-Net weights per data
source, the plots drawn from them (loss, lr, CMW weight histograms; refreshed at every checkpoint, so a long run can
be watched), and the whole run's elapsed time and ETA."""

from __future__ import annotations

import importlib
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from timm_uscl.errors import USCLError

__all__ = ["Metrics", "plot_run", "read_records", "check_reporting", "duration", "PLOT_INTERVAL_S"]

PLOT_INTERVAL_S = 60.0  # plots/ is redrawn at a checkpoint at most this often while a run goes


def check_reporting(*, tensorboard: bool, progress: bool) -> None:
    """Every optional package the run's reporting will import, imported now: a missing one is reported before the
    run folder is claimed (so the corrected command is not refused as a rerun), not after the training."""
    needed = [("matplotlib", "the plots", "matplotlib")]
    if tensorboard:
        needed.append(("torch.utils.tensorboard", "tensorboard=true", "tensorboard"))
    if progress:
        needed.append(("tqdm", "the progress bar (or pass --no-progress)", "tqdm"))
    for module, what, package in needed:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise USCLError(f"{what} needs the {package} package: pip install {package}; nothing was written") from err


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``42s``: a log line's elapsed time or ETA."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_records(path: Path) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl; a torn last line (a run killed while writing it) is skipped, not fatal."""
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class Metrics:
    """JSONL metrics on rank 0, optional TensorBoard, and CMW weights per source for the histograms."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.out_dir = out_dir
        self.path = out_dir / "metrics.jsonl"
        self.weights: dict[str, list[float]] = defaultdict(list)
        self.last: dict[str, Any] = {}  # the latest step record (what the per-epoch log line reports)
        self.started = time.perf_counter()  # this process's start of training (wall time, ETA)
        self.first_step = 0  # the step training started from (after a resume)
        self.total_steps = 0  # the steps the whole run will take (0: unknown)
        self.plotted_at: float | None = None  # elapsed() when plots/ was last drawn during the run
        self.writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # present: check_reporting ran before the run began

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def plan(self, *, first_step: int, total_steps: int) -> None:
        """Start the run's clock: steps are counted from ``first_step`` towards ``total_steps`` (the whole run)."""
        self.started, self.first_step, self.total_steps = time.perf_counter(), first_step, total_steps

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def eta(self, step: int) -> float | None:
        """Seconds left for the whole run, at this process's pace so far; None before the first step or when the
        run's length is unknown."""
        done = step - self.first_step
        if done <= 0 or not self.total_steps:
            return None
        return self.elapsed() / done * max(self.total_steps - step, 0)

    def log(self, record: dict[str, Any]) -> None:
        if "loss" in record:
            self.last = record
        if not self.enabled:
            return
        with self.path.open("a") as handle:  # NaN/inf (a diverging online probe) as null: the file stays JSON
            handle.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}, allow_nan=False) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _line_plot(path: Path, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, points in series.items():
        if points:
            ax.plot(*zip(*points), label=label, marker="o" if len(points) < 30 else None)
    if len(series) > 1:
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _histogram(path: Path, weights: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for source, values in sorted(weights.items()):
        ax.hist(values, bins=30, alpha=0.6, label=f"{source} (n={len(values)})")
    ax.set_xlabel("CMW-Net weight (raw sigmoid)")
    ax.set_ylabel("pairs")
    ax.set_title("CMW-Net weights, last epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_run(out_dir: Path, weights: dict[str, list[float]]) -> None:
    """From metrics.jsonl: loss (and meta loss) and lr per step, the online evaluation per epoch when the run had
    one (``plots/online.png``), and a histogram of the last epoch's CMW weights per data source."""
    records = read_records(out_dir / "metrics.jsonl")
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    steps = [r for r in records if "loss" in r]
    _line_plot(
        plots / "loss.png",
        {
            "loss": [(r["step"], r["loss"]) for r in steps],
            "meta loss": [(r["step"], r["meta_loss"]) for r in steps if "meta_loss" in r],
        },
        "step",
        "loss",
    )
    _line_plot(plots / "lr.png", {"lr": [(r["step"], r["lr"]) for r in steps]}, "step", "lr")
    online = sorted({k for r in records for k in r if k.startswith("online_")})
    if online:
        series = {k[len("online_") :]: [(r["epoch"], r[k]) for r in records if k in r] for k in online}
        _line_plot(plots / "online.png", series, "epoch", "online evaluation")
    if weights:
        _histogram(plots / "cmw_weights.png", weights)
