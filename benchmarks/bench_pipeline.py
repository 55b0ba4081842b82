"""Throughput of the streaming pair pipeline on CPU; prints a markdown table for benchmarks/RESULTS.md.

    python benchmarks/bench_pipeline.py [--data ../shared/data] [--size 64] [--videos 96]

Measures, in one run (so ratios are comparable on a shared machine):
* pairs/s of the whole CPU pipeline (DataLoader workers decode + PPG; no augmentation) with 0, 1, 2 workers,
  on POCUS and COVID-BLUES, decoding from the files and from a warm frame cache;
* decode frames/s: sparse (the 3 frames of a Meta-USCL pair) vs whole-clip decode of the same clips;
* augmentation pairs/s on CPU: the vectorized implementation vs kornia (if installed), same batch.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _pipeline(source: str, workers: int, size: int, videos: int, cache: str | None, epoch: int = 0) -> float:
    from timm_uscl.training.data import DataConfig, PairDataModule

    cfg = DataConfig(
        source=source,
        image_size=size,
        batch_size=16,
        num_workers=workers,
        meta_fraction=0.0,
        drop_last=False,
        cache_dir=cache,
        filters=None,
    )
    dm = PairDataModule(cfg)
    dm._train.dataset = dm._train.dataset.take(videos)  # a fixed slice keeps runs short
    t = time.perf_counter()
    n = sum(len(b) for b in dm.train_loader(epoch))
    return n / (time.perf_counter() - t)


def _decode(paths: list[str], size: int) -> tuple[float, float]:
    from timm_uscl.training.data.decode import read_frames
    from timm_uscl.training.data.pairs import item_pair

    def choose(length: int, ident: int) -> tuple[int, ...]:
        return item_pair("metauscl", length, ident).indices

    t, n = time.perf_counter(), 0
    for k, p in enumerate(paths):
        n += len(read_frames(p, functools.partial(choose, ident=k), size))
    sparse = n / (time.perf_counter() - t)
    t, n = time.perf_counter(), 0
    for p in paths:
        n += len(read_frames(p, lambda L: range(L), size))
    whole = n / (time.perf_counter() - t)
    return sparse, whole


def _augment(size: int, batch: int, reps: int) -> dict[str, float]:
    from timm_uscl.training.data.augment import AugmentConfig, augment

    cfg = AugmentConfig(size=size)
    x = torch.randint(0, 256, (2 * batch, 1, size, size), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    for name, inp in (("vectorized, 1 channel", x), ("vectorized, 3 channels", x.expand(-1, 3, -1, -1))):
        augment(inp, cfg, g)
        t = time.perf_counter()
        for _ in range(reps):
            augment(inp, cfg, g)
        out[name] = reps * batch / (time.perf_counter() - t)
    try:
        import kornia.augmentation as K
    except ImportError:
        return out
    s = cfg.jitter_strength
    kaug = K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=cfg.crop_scale, ratio=cfg.crop_ratio),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=1.0),
        K.Normalize(mean=torch.tensor([cfg.mean] * 3), std=torch.tensor([cfg.std] * 3)),
    )
    x3 = x.expand(-1, 3, -1, -1).float() / 255
    kaug(x3)
    t = time.perf_counter()
    for _ in range(reps):
        kaug(x3.float() / 1.0)
    out["kornia 0.9, 3 channels"] = reps * batch / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--videos", type=int, default=96, help="videos per pipeline measurement")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load before: {os.getloadavg()}  cores: {os.cpu_count()}  torch threads: 1 (main)")

    print("\n| source | workers | from files (pairs/s) | warm frame cache (pairs/s) |\n|---|---:|---:|---:|")
    for name in ("pocus", "covid_blues"):
        src = str(Path(args.data) / name)
        with tempfile.TemporaryDirectory() as cache:
            _pipeline(src, 2, args.size, args.videos, cache)  # fill the cache
            for w in args.workers:
                cold = _pipeline(src, w, args.size, args.videos, None)
                warm = _pipeline(src, w, args.size, args.videos, cache, epoch=1)
                print(f"| {name} | {w} | {cold:.1f} | {warm:.1f} |", flush=True)

    print(
        "\n| source | sparse decode (frames/s) | whole-clip decode (frames/s) | sparse pairs/s (1 core) "
        "| whole-clip pairs/s (1 core) |\n|---|---:|---:|---:|---:|"
    )
    for name, sub in (("pocus", "videos"), ("covid_blues", "lus_videos")):
        paths = sorted(str(p) for p in (Path(args.data) / name / sub).glob("*.mp4"))[:24]
        sparse, whole = _decode(paths, args.size)
        mean_len = np.mean([_len(p) for p in paths])
        print(f"| {name} | {sparse:.0f} | {whole:.0f} | {sparse / 3:.1f} | {whole / mean_len:.1f} |", flush=True)

    print("\n| augmentation (CPU, 1 thread, batch 64 pairs) | pairs/s |\n|---|---:|")
    for name, v in _augment(args.size, 64, 10).items():
        print(f"| {name} | {v:.0f} |", flush=True)
    print(f"\nload after: {os.getloadavg()}")


def _len(path: str) -> int:
    from torchcodec.decoders import VideoDecoder

    return VideoDecoder(path, seek_mode="approximate").metadata.num_frames or 1


if __name__ == "__main__":
    main()
