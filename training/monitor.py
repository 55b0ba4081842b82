"""What a run reports: ``metrics.jsonl`` lines (rank 0), optional TensorBoard scalars, the CMW-Net weights per data
source, and the plots drawn from them at the end (loss, lr, CMW weight histograms)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from timm_uscl.errors import USCLError

__all__ = ["Metrics", "plot_run"]


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
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_run(out_dir: Path, weights: dict[str, list[float]]) -> None:
    """Loss and lr curves from metrics.jsonl, and a histogram of CMW weights per data source."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display needed
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    steps = [r["step"] for r in records]
    for key in ("loss", "lr"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [r[key] for r in records])
        if key == "loss" and any("meta_loss" in r for r in records):
            meta = [(r["step"], r["meta_loss"]) for r in records if "meta_loss" in r]
            ax.plot(*zip(*meta), label="meta loss", alpha=0.7)
            ax.legend()
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        fig.tight_layout()
        fig.savefig(plots / f"{key}.png", dpi=100)
        plt.close(fig)
    if weights:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for source, values in sorted(weights.items()):
            ax.hist(values, bins=30, alpha=0.6, label=f"{source} (n={len(values)})")
        ax.set_xlabel("CMW-Net weight (raw sigmoid)")
        ax.set_ylabel("pairs")
        ax.set_title("CMW-Net weights, last epoch")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots / "cmw_weights.png", dpi=100)
        plt.close(fig)
