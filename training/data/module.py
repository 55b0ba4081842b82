"""The streaming pair pipeline the trainer uses: sources -> decode -> PPG in workers -> augment on device.

Interface::

    from timm_uscl.training.data import DataConfig, PairDataModule

    cfg = DataConfig(source="../shared/data/covid_blues", pair_type="metauscl", image_size=64, batch_size=32)
    dm = PairDataModule(cfg, rank=0, world_size=1)
    for batch in dm.train_loader(epoch):            # PairBatch: pinned uint8 frames, one pair per video
        x1, x2 = dm.gpu_views(batch, device)         # float [B, 3, S, S], augmented per sample, normalized
        batch.sources                                # sub-dataset name per pair (CMW weight histograms)
    meta_it = dm.meta_iterator()                     # infinite; decodes the held-out split once, then cycles
    m1, m2 = dm.gpu_views(next(meta_it), device)
    dm.state_dict(); dm.load_state_dict(sd)          # epoch + per-worker position: resume mid-epoch
    dm.stats                                         # decoded / skipped (name -> reason) / skipped_frames

Design notes:

* Workers only decode and build uint8 views (:mod:`.pairs`); augmentation runs batched on the training
  device (:mod:`.augment`), so CPU workers are spent on decoding, the actual bottleneck.
* One item per video per epoch. Order: a seeded ``datasets`` shuffle (shards = files) re-drawn by
  ``set_epoch``, then ``split_dataset_by_node`` for DDP, then the DataLoader splits shards over workers.
  Per-item randomness is keyed by ``(seed, epoch, key)`` (:mod:`.draws`), so a video's pair and augmentation do
  not depend on workers, ranks, resumption or the device, and equal the frame store's (:mod:`.store_module`).
* Each worker batches its own items (``batch_size=None`` at the DataLoader), which lets it report what it
  skipped and how far it got; ``state_dict`` stores that position per worker and a resumed epoch skips the
  consumed rows without decoding them. The state is per rank (save one per rank under DDP) and needs the
  same ``num_workers`` and ``world_size`` (otherwise the epoch restarts, with a warning).
* Files that do not decode are skipped, counted and logged once with their name; so are frame videos with no
  readable frame, and single frames of a frame video that do not read (``stats.skipped_frames``:
  ``<video>/<frame> -> reason``; the video trains on the frames that read). An epoch in which nothing decodes
  raises :class:`DataError` naming the files and why. A split left empty names its cause: the meta split drew
  none of the videos, or took them all (a run without the meta step passes ``need_meta=False`` and trains on a
  folder too small for a meta split).
* ``decoder`` picks the backend (:mod:`.decode`); it is resolved once here, in the main process, so the
  choice is logged once and workers inherit it.
* ``cache_dir`` turns on :class:`~.cache.FrameCache` (resized frames per clip on local disk, never in the
  repo). Without it every item decodes its frames from the file; single-GOP clips make that cost most of
  a whole-clip decode (see benchmarks/RESULTS.md), so long runs on few cores should set it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import DataError, DecodeError
from .batch import DataStats, PairBatch, batch_views
from .cache import FrameCache
from .config import DataConfig
from .decode import read_frames, resolve_decoder
from .draws import DRAWS_VERSION, item_id, item_ids, key_ids, meta_batch
from .pairs import ItemPair, item_pair, views_per_item, worker_views
from .sources import VideoSource, meta_split_fn, open_source

__all__ = ["PairDataModule"]

log = logging.getLogger(__name__)


def _undecodable(skipped: list[tuple[str, str]]) -> str:
    """One line naming the files that did not decode (the first ten) and the fix."""
    if not skipped:
        return "no video in this split; add videos"
    named = "; ".join(f"{name}: {reason.removeprefix(name + ': ')}" for name, reason in skipped[:10])
    more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return f"none of the {len(skipped)} videos decoded ({named}{more}); fix or remove these files"


class _PairStream(IterableDataset):
    """Iterates a (worker-sharded) ``datasets`` stream and yields collated :class:`PairBatch` es."""

    def __init__(
        self,
        dataset: Any,
        cfg: DataConfig,
        pair_type: str,
        epoch: int,
        batch_size: int,
        drop_last: bool,
        skip_rows: list[int] | None = None,
        decoder: str = "auto",
    ) -> None:
        self.dataset, self.cfg, self.pair_type, self.epoch = dataset, cfg, pair_type, epoch
        self.batch_size, self.drop_last, self.skip_rows = batch_size, drop_last, skip_rows or []
        self.decoder = decoder

    def _batch(self, items: list[tuple[torch.Tensor, float, int, str, str]], **info: Any) -> PairBatch:
        k = views_per_item(self.pair_type)
        c = 1 if self.cfg.grayscale else 3
        s = self.cfg.image_size
        frames = torch.stack([it[0] for it in items]) if items else torch.empty(0, k, c, s, s, dtype=torch.uint8)
        lam = torch.tensor([it[1] for it in items], dtype=torch.float32)
        ids = torch.tensor([it[2] for it in items], dtype=torch.long)
        return PairBatch(frames, lam, ids, [it[3] for it in items], [it[4] for it in items], **info)

    def __iter__(self) -> Iterator[PairBatch]:
        cfg, pt = self.cfg, self.pair_type
        info = get_worker_info()
        worker = info.id if info is not None else 0
        skip = self.skip_rows[worker] if worker < len(self.skip_rows) else 0
        cache = FrameCache(cfg.cache_dir) if cfg.cache_dir else None
        items: list[tuple[torch.Tensor, float, int, str, str]] = []
        decoded, skipped, rows = 0, [], 0
        bad: list[tuple[str, str]] = []
        for rows, row in enumerate(self.dataset, start=1):
            if rows <= skip:
                continue
            ident = item_id(row["key"], seed=cfg.seed, purpose="train", draw=self.epoch)
            plans: list[ItemPair] = []

            def choose(length: int, ident: int = ident, plans: list[ItemPair] = plans) -> tuple[int, ...]:
                plans.append(item_pair(pt, length, ident, max_dist=cfg.max_dist))
                return plans[-1].indices

            try:
                frames = read_frames(
                    row["video"],
                    choose,
                    cfg.image_size,
                    grayscale=cfg.grayscale,
                    cache=cache,
                    decoder=self.decoder,
                    bad_frames=bad,
                )
            except Exception as e:  # noqa: BLE001 - any bad file is skipped and reported, never fatal
                reason = str(e) if isinstance(e, DecodeError) else f"{type(e).__name__}: {e}"
                reason = reason.strip().splitlines()[0] if reason.strip() else type(e).__name__
                skipped.append((row["key"], reason))
                continue
            views, lam = worker_views(pt, frames, plans[-1])
            items.append((views, lam, ident, row["source"], row["key"]))
            decoded += 1
            if len(items) == self.batch_size:
                yield self._batch(items, worker=worker, rows=rows, decoded=decoded, skipped=skipped, bad_frames=bad)
                items, decoded, skipped, bad = [], 0, [], []
        if items and self.drop_last:
            items = []
        if items or decoded or skipped or bad or rows > skip:
            yield self._batch(
                items, worker=worker, rows=max(rows, skip), decoded=decoded, skipped=skipped, bad_frames=bad
            )


class PairDataModule:
    """Builds per-epoch training loaders, the held-out meta iterator, and device-side views."""

    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1, need_meta: bool = True) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.stats = DataStats()
        if cfg.cache_dir:  # fail here, clearly, rather than inside a worker
            try:
                FrameCache(cfg.cache_dir)
            except OSError as e:
                raise DataError(
                    f"{cfg.cache_dir}: cannot create the frame cache ({e.strerror}); set cache_dir to a "
                    "writable folder, or to null to decode from the files every time"
                ) from e
        self._decoder = resolve_decoder(cfg.decoder)
        is_meta = meta_split_fn(cfg.meta_fraction, cfg.seed, cfg.meta_group_by)
        specs = cfg.sources()
        self._train = open_source(specs, cfg.filters, cfg.exclude, split=lambda r: not is_meta(r))
        if self._train.rows == []:
            raise DataError(self._empty_split(self._train, meta=False))
        self._meta = open_source(specs, cfg.filters, cfg.exclude, split=is_meta) if cfg.meta_fraction > 0 else None
        if need_meta and self._meta is not None and self._meta.rows == []:
            raise DataError(self._empty_split(self._meta, meta=True))
        self._aug = cfg.augment_config()
        self._epoch = 0
        self._rows = [0] * max(1, cfg.num_workers)
        self._complete = False
        self._resume: dict[str, Any] | None = None
        self._meta_cache: tuple[torch.Tensor, list[str], list[str]] | None = None
        self._meta_drawn = 0  # meta batches handed out so far: a resumed run skips as many (same order)

    def _empty_split(self, src: VideoSource, meta: bool) -> str:
        """Why a local split is empty: which split, of how many videos, and what to change."""
        cfg = self.cfg
        split = f"the meta split (meta_fraction={cfg.meta_fraction}, seed={cfg.seed}" + (
            f", meta_group_by={cfg.meta_group_by!r})" if cfg.meta_group_by else ")"
        )
        videos = f"{src.matched} videos" + (" that pass the filters" if cfg.filters or cfg.exclude else "")
        if meta:
            return (
                f"{split} drew none of the {videos} of {list(src.names)}; raise meta_fraction, change seed or add "
                "videos (a run without the meta step needs no meta split)"
            )
        return f"{split} took all {videos} of {list(src.names)}; none is left for training: lower meta_fraction"

    # -- sizes (known for local folders, else None) --------------------------------------------------------
    @property
    def num_videos(self) -> int | None:
        """Training videos over all ranks (local sources only)."""
        return len(self._train.rows) if self._train.rows is not None else None

    @property
    def num_meta_videos(self) -> int | None:
        if self._meta is None or self._meta.dataset is None:
            return 0
        return len(self._meta.rows) if self._meta.rows is not None else None

    # -- training ------------------------------------------------------------------------------------------
    def _loader(self, stream: _PairStream, workers: int) -> DataLoader:
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            timeout=self.cfg.timeout if workers else 0,
        )

    def train_loader(self, epoch: int) -> Iterator[PairBatch]:
        """This rank's batches for ``epoch`` (one pair per video); resumes mid-epoch after ``load_state_dict``."""
        from datasets.distributed import split_dataset_by_node

        cfg = self.cfg
        ds = self._train.dataset.shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer)
        if self.world_size > 1:
            ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)
        ds.set_epoch(epoch)
        skip = self._take_resume(epoch)
        stream = _PairStream(ds, cfg, cfg.pair_type, epoch, cfg.batch_size, cfg.drop_last, skip, self._decoder)
        self._epoch, self._complete = epoch, False
        self._rows = list(skip) if skip else [0] * max(1, cfg.num_workers)
        return self._run_epoch(self._loader(stream, cfg.num_workers), epoch)

    def _run_epoch(self, loader: DataLoader, epoch: int) -> Iterator[PairBatch]:
        decoded_before = self.stats.decoded
        yielded = 0
        skipped: list[tuple[str, str]] = []
        for batch in loader:
            self._account(batch)
            skipped += batch.skipped
            self._rows[batch.worker] = batch.rows
            if len(batch):
                yielded += 1
                yield batch
        self._complete = True
        if self.stats.decoded == decoded_before and skipped:
            raise DataError(f"epoch {epoch}, rank {self.rank}: {_undecodable(skipped)}")
        if yielded == 0 and self.stats.decoded > decoded_before and self.cfg.drop_last:
            raise DataError(
                f"epoch {epoch}: {self.stats.decoded - decoded_before} videos decoded on rank "
                f"{self.rank} but no full batch of {self.cfg.batch_size} per worker; lower batch_size "
                "or num_workers"
            )

    def _account(self, batch: PairBatch) -> None:
        self.stats.decoded += batch.decoded
        self.stats.batches += bool(len(batch))
        for name, reason in batch.skipped:
            if name not in self.stats.skipped:
                log.warning("skipping %s: %s", name, reason)
                self.stats.skipped[name] = reason
        for name, reason in batch.bad_frames:
            if name not in self.stats.skipped_frames:
                log.warning("skipping frame %s: %s", name, reason)
                self.stats.skipped_frames[name] = reason

    # -- meta split ----------------------------------------------------------------------------------------
    def _decode_meta(self) -> tuple[torch.Tensor, list[str], list[str]]:
        if self._meta is None:
            raise DataError("meta_fraction=0: there is no meta split; set meta_fraction > 0 for meta batches")
        if self._meta.dataset is None:
            raise DataError(self._empty_split(self._meta, meta=True))
        stream = _PairStream(self._meta.dataset, self.cfg, "meta", 0, 64, False, None, self._decoder)
        frames, sources, keys, skipped = [], [], [], []
        for batch in self._loader(stream, self.cfg.num_workers):
            self._account(batch)
            frames.append(batch.frames)
            sources += batch.sources
            keys += batch.keys
            skipped += batch.skipped
        if not keys:
            raise DataError(f"the meta split (meta_fraction={self.cfg.meta_fraction}): {_undecodable(skipped)}")
        order = sorted(range(len(keys)), key=keys.__getitem__)  # by key, as the frame store: workers interleave
        return torch.cat(frames)[torch.tensor(order)], [sources[i] for i in order], [keys[i] for i in order]

    def meta_iterator(self) -> Iterator[PairBatch]:
        """Infinite meta batches (first frame of held-out videos); decodes the split once, then reshuffles."""
        if self._meta_cache is None:
            self._meta_cache = self._decode_meta()
        frames, sources, keys = self._meta_cache
        n = len(keys)
        if n < 2:  # a BatchNorm batch of one sample cannot train (and NT-Xent needs a negative)
            raise DataError(
                f"the meta split (meta_fraction={self.cfg.meta_fraction}, seed={self.cfg.seed}) holds {n} decodable "
                f"video ({', '.join(keys) or 'none'}); meta batches need at least 2: raise meta_fraction or add videos"
            )
        bs = min(self.cfg.meta_batch_size, n)
        meta_keys = key_ids(keys)
        while True:  # the frame store's schedule (.draws.meta_batch); a resumed run continues at its count
            idx = meta_batch(n, bs, seed=self.cfg.seed, rank=self.rank, drawn=self._meta_drawn)
            ids = item_ids(meta_keys[idx], seed=self.cfg.seed, purpose="meta", draw=self._meta_drawn, rank=self.rank)
            batch = PairBatch(frames[idx], torch.ones(bs), ids, [sources[i] for i in idx], [keys[i] for i in idx])
            self._meta_drawn += 1
            yield batch.pin_memory() if torch.cuda.is_available() else batch

    # -- device side ---------------------------------------------------------------------------------------
    def gpu_views(self, batch: PairBatch, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views, float ``[B, 3, S, S]`` on ``device`` (:func:`.batch.batch_views`: the items' keyed draws)."""
        return batch_views(batch, device, self._aug)

    # -- checkpointing -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "stream",
            "epoch": self._epoch,
            "rows": list(self._rows),
            "complete": self._complete,
            "num_workers": self.cfg.num_workers,
            "world_size": self.world_size,
            "rank": self.rank,
            "meta_drawn": self._meta_drawn,
            "draws": DRAWS_VERSION,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)  # a "generator" entry of older checkpoints is not needed: draws are keyed
        self._meta_drawn = int(state.get("meta_drawn", 0))

    def _take_resume(self, epoch: int) -> list[int] | None:
        sd, self._resume = self._resume, None
        if sd is None or sd.get("epoch") != epoch or sd.get("complete"):
            return None
        # a frame store's state (store=auto may pick the other path on resume), other workers or ranks, or rows
        # drawn by another version of the draws: the epoch restarts rather than skip the wrong videos
        saved = (sd.get("kind", "stream"), sd.get("num_workers"), sd.get("world_size"), sd.get("draws"))
        now = ("stream", self.cfg.num_workers, self.world_size, DRAWS_VERSION)
        if saved != now:
            log.warning("data state saved as %s, now %s: epoch %s restarts", saved, now, epoch)
            return None
        return list(sd["rows"])
