"""Print the figures of a `timm-uscl reproduce` run root as the markdown tables RESULTS.md quotes.

Why a script: the paper-budget section of RESULTS.md is written from a run root that lives outside the work tree
(and may not survive the machine); this reads only what the job recorded (stage records, each pretraining's
metrics.jsonl, the table stage's table.md), so every figure there can be checked against the root it came from.

    python benchmarks/repro_report.py [--root ~/.cache/timm-uscl/repro]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

METHODS = {"meta_uscl": "Meta-USCL", "uscl": "USCL", "simclr": "SimCLR"}


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill
    return rows


def stage_table(root: Path) -> list[str]:
    from timm_uscl.training.reproduce import STAGES, Root, elapsed_s

    job = Root(root)
    lines = ["| stage | status | commit | attempts | wall time |", "|---|---|---|---:|---:|"]
    for stage in STAGES:
        r = job.read(stage)
        wall = f"{elapsed_s(job, stage, r) / 60:.1f} min" + (" so far" if r.status == "running" else "")
        lines.append(f"| {stage.name} | {r.status} | {(r.commit or '-')[:7]} | {r.attempts} | {wall} |")
    return lines


def pretraining_table(root: Path) -> list[str]:
    lines = [
        "| method | steps | mean loss, last 10 epochs | median pairs/s | online kNN / linear (last probe) "
        "| CMW weight mean, first epoch / last 10 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, label in METHODS.items():
        rows = _records(root / f"pretrain_{method}" / "metrics.jsonl")
        steps = [r for r in rows if "loss" in r]
        if not steps:
            continue
        online = [r for r in rows if "online_knn_acc" in r]
        probe = (
            f"{100 * online[-1]['online_knn_acc']:.1f} % / {100 * online[-1]['online_linear_acc']:.1f} %"
            if online
            else "–"
        )
        last = [r for r in steps if r["epoch"] > steps[-1]["epoch"] - 10]  # one logged step is too noisy a figure
        loss = statistics.fmean(r["loss"] for r in last)
        weights = [r["weight_mean"] for r in steps if "weight_mean" in r]
        cmw = f"{weights[0]:.2f} / {statistics.fmean(r['weight_mean'] for r in last):.2f}" if weights else "–"
        rate = statistics.median(r["pairs_per_s"] for r in steps)
        lines.append(
            f"| {label} | {steps[-1]['step']:,} | {loss:.3f} | {rate:.1f} | {probe} (epoch "
            f"{online[-1]['epoch'] if online else '–'}) | {cmw} |"
        )
    return lines


def online_table(root: Path) -> list[str]:
    curves = {
        label: {r["epoch"]: r for r in _records(root / f"pretrain_{m}" / "metrics.jsonl") if "online_knn_acc" in r}
        for m, label in METHODS.items()
    }
    epochs = sorted({e for c in curves.values() for e in c})
    if not epochs:
        return []
    lines = ["| epoch | " + " | ".join(str(e) for e in epochs) + " |", "|---|" + "---:|" * len(epochs)]
    for label, curve in curves.items():
        for key, name in (("online_knn_acc", "kNN"), ("online_linear_acc", "linear")):
            cells = [f"{100 * curve[e][key]:.1f}" if e in curve else "" for e in epochs]
            lines.append(f"| {label} {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="~/.cache/timm-uscl/repro", help="the run root (default: %(default)s)")
    root = Path(p.parse_args(argv).root).expanduser()
    if not (root / "plan.json").is_file():
        raise SystemExit(f"{root}: no reproduction run root here (no plan.json); pass --root")
    print(f"plan: {(root / 'plan.json').read_text().strip()}\n")
    for title, lines in (
        ("Stages", stage_table(root)),
        ("Pretraining", pretraining_table(root)),
        ("Online evaluation during pretraining (POCUS, frozen backbone, %)", online_table(root)),
    ):
        print(f"## {title}\n\n" + "\n".join(lines) + "\n")
    table = root / "table" / "table.md"
    if table.is_file():
        print("## Paired comparison (the table stage)\n\n" + table.read_text())


if __name__ == "__main__":
    main()
