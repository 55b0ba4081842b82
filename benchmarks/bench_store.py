"""Pairs/s of the frame store (sampled + augmented on the device) against the streaming pipeline, in one run.

    python benchmarks/bench_store.py [--data ../shared/data/covid_blues] [--size 64] [--device cpu|cuda]
    python benchmarks/bench_store.py --store-file .device_bundle/covid_blues_64.frames --device cuda --baseline none

Measures, on the same videos and batch size:
* store fill: decoding every clip once from the files (or reading ``--store-file``), and the copy to the device;
* store pairs/s: epochs of ``train_loader`` + ``gpu_views`` (PPG pairs, per-sample augmentation, both views),
  ``--batches`` batches after one warm-up epoch; on CUDA also checked to run without a single host
  synchronisation (``torch.cuda.set_sync_debug_mode("error")``);
* the streaming pipeline (``PairDataModule``: DataLoader workers decode + PPG, then the same augmentation) on
  ``--videos`` videos, from the files and from a warm frame cache (its best case);
and prints the ratios. Targets (issue 12): >= 300 pairs/s on the 2-core CPU at 64², >= 20,000 on the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _store_rate(dm: Any, device: torch.device, batches: int, check_sync: bool) -> tuple[float, int]:
    """Pairs/s over ``batches`` batches (epochs chained), after one warm-up epoch."""
    for batch in dm.train_loader(0):
        dm.gpu_views(batch, device)
    _sync(device)
    if check_sync:
        torch.cuda.set_sync_debug_mode("error")  # any host synchronisation below raises
    pairs, done, epoch = 0, 0, 1
    start = time.perf_counter()
    try:
        while done < batches:
            for batch in dm.train_loader(epoch):
                x1, x2 = dm.gpu_views(batch, device)
                pairs, done = pairs + len(batch), done + 1
                if done == batches:
                    break
            epoch += 1
    finally:
        if check_sync:
            torch.cuda.set_sync_debug_mode("default")
    _sync(device)
    return pairs / (time.perf_counter() - start), pairs


def _stream_rate(cfg: Any, device: torch.device, videos: int, cache: str | None, epoch: int) -> float:
    """The streaming pipeline on ``videos`` videos: decode + PPG in workers, then the same augmentation."""
    from timm_uscl.training.data import PairDataModule

    dm = PairDataModule(dataclasses.replace(cfg, cache_dir=cache, drop_last=False))
    dm._train.dataset = dm._train.dataset.take(videos)  # a fixed slice keeps runs short
    start, pairs = time.perf_counter(), 0
    for batch in dm.train_loader(epoch):
        dm.gpu_views(batch, device)
        pairs += len(batch)
    _sync(device)
    return pairs / (time.perf_counter() - start)


def _baselines(cfg: Any, device: torch.device, args: argparse.Namespace, rate: float) -> dict[str, float]:
    """The streaming pipeline's rows of the table: from the files, and from a warm frame cache."""
    out: dict[str, float] = {}
    for kind in ("files", "cache"):
        if args.baseline not in (kind, "both"):
            continue
        with tempfile.TemporaryDirectory() as cache:
            if kind == "cache":
                _stream_rate(cfg, device, args.videos, cache, 0)  # fill the cache
            r = _stream_rate(cfg, device, args.videos, cache if kind == "cache" else None, 1)
        out[f"stream_{kind}_pairs_per_s"] = r
        label = "from the files" if kind == "files" else "warm frame cache"
        print(f"| streaming, {args.workers} workers, {label} ({args.videos} videos) | {r:.1f} | {rate / r:.1f} |")
    return out


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(here.parent / "shared" / "data" / "covid_blues"))
    ap.add_argument("--store-file", help="read the store from this file instead of decoding --data")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=200, help="timed batches of the store")
    ap.add_argument("--pair-type", default="metauscl", choices=("metauscl", "uscl", "simclr"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=2, help="decoding threads (store) and DataLoader workers")
    ap.add_argument("--videos", type=int, default=64, help="videos per streaming-pipeline measurement")
    ap.add_argument("--baseline", choices=("files", "cache", "both", "none"), default="both")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads for the store loop")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    from timm_uscl.training.data import DataConfig
    from timm_uscl.training.data.store_module import StoreDataModule

    device = torch.device(args.device)
    cfg = DataConfig(
        source=args.data,
        image_size=args.size,
        batch_size=args.batch,
        num_workers=args.workers,
        pair_type=args.pair_type,
        store="device",
        store_file=args.store_file,
    )
    print(f"load before: {os.getloadavg()}  cores: {os.cpu_count()}  torch threads: {torch.get_num_threads()}")
    start = time.perf_counter()
    dm = StoreDataModule(cfg, device=device)
    _sync(device)
    fill = time.perf_counter() - start
    what = "read from " + args.store_file if args.store_file else "decoded from the files"
    store = dm.store
    print(
        f"\nstore: {store.num_videos} clips, {store.frames.shape[0]} frames, {store.nbytes / 2**20:.1f} MiB on "
        f"{store.frames.device}, {what} in {fill:.1f} s ({dm.num_videos} training videos, {args.workers} threads)"
    )
    figures: dict[str, float | str] = {"device": str(device), "fill_s": fill}
    print(f"\n| pipeline ({args.pair_type}, {args.size}², batch {args.batch}, {device}) | pairs/s | store ÷ this |")
    print("|---|---:|---:|")
    rate = 0.0
    for threads in args.threads if device.type == "cpu" else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        r, pairs = _store_rate(dm, device, args.batches, check_sync=device.type == "cuda")
        figures[f"store_pairs_per_s_{threads}_threads"] = r
        rate = max(rate, r)
        print(f"| frame store: sampled + augmented on {device}, {threads} threads ({pairs} pairs) | {r:.0f} | – |")
    figures["store_pairs_per_s"] = rate
    if device.type == "cuda":
        print("(no host synchronisation in the timed loop: sync debug mode 'error' raised nothing)")
    if args.baseline != "none" and not args.store_file:
        figures.update(_baselines(dataclasses.replace(cfg, store="off"), device, args, rate))
    print(f"\nload after: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
