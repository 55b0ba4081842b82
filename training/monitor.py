"""What a run reports: ``metrics.jsonl`` lines (rank 0), optional TensorBoard scalars, the CMW-Net weights per data
source, and the plots drawn from them at the end (loss, lr, CMW weight histograms)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from timm_uscl.errors import USCLError

__all__ = ["Metrics", "plot_run", "read_records"]


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
        self.path = out_dir / "metrics.jsonl"
        self.weights: dict[str, list[float]] = defaultdict(list)
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise USCLError("tensorboard=true needs the tensorboard package: pip install tensorboard") from err

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
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
