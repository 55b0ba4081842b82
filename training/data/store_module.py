"""The data module over a :class:`~.store.FrameStore`: the :class:`~.datamodule.DataModule` protocol, every draw on
the device.

Interface (:class:`~.datamodule.DataModule`, as :class:`~.module.PairDataModule`)::

    dm = data_module(cfg, rank=0, world_size=1, device=device)   # .datamodule: this, or the stream (store=off)
    for batch in dm.train_loader(epoch):          # len(loader) batches; one pair per training video per epoch
        x1, x2 = dm.gpu_views(batch, device)       # float [B, 3, S, S], augmented per sample, normalized
        batch.sources                              # sub-dataset name per pair (CMW weight histograms)
    m1, m2 = dm.gpu_views(next(dm.meta_iterator()), device)
    dm.state_dict(); dm.load_state_dict(sd)        # epoch + batch position (+ meta batches drawn): exact resume
    dm.num_videos, dm.num_meta_videos, dm.stats

What happens per epoch, and why it costs the host nothing but launches:

* **Order.** A seeded permutation of the training videos, drawn on the host from ``(seed, epoch)`` (a few
  hundred integers once per epoch, no device round trip, :func:`.draws.epoch_order`) and copied to the device once.
* **Pairs.** :func:`.pairs.plan_epoch` draws every video's frames and mixing weights for the whole epoch in
  a few tensor operations on the frames' device, from uniforms keyed by ``(seed, epoch, video key)``
  (:mod:`.draws`): the stream gives every video the same pair. Each step then gathers its rows of the store,
  mixes PPG views in pixel space and augments on the device (:func:`.batch.batch_views`, from the items' keyed
  uniforms too).
* **Every video, every epoch.** Batches are ``batch_size`` pairs with the remainder last; no video sits out.
  A remainder of ONE joins the batch before it (that batch has ``batch_size + 1`` pairs): NT-Xent needs a
  second pair for negatives, and one pair alone would give a zero loss with no gradient. Under DDP the epoch
  order is shared and strided over ranks; when the videos do not divide evenly the first few are repeated so
  that every rank takes the same number of steps (the engine stops all ranks at the first exhausted one).
* **Reproducible, resumable.** Frame choices, weights and augmentation depend only on ``(seed, epoch, video)``
  and the order on ``(seed, epoch)``: the same seed gives the same batches on a CPU or a GPU, and a run resumed
  mid-epoch from :meth:`state_dict` gives exactly the batches the uninterrupted run would have (also the meta
  batches, whose count is saved).
* **Meta batches.** The first frame of each held-out meta video (sorted by key), gathered once onto the training
  device; reshuffled every pass by :func:`.draws.meta_batch`, as the stream does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from .batch import DataStats, PairBatch, batch_views
from .config import DataConfig
from .draws import DRAWS_VERSION, epoch_order, item_ids, key_ids, meta_batch
from .pairs import plan_epoch
from .sampling import EpochPlan, mix_views
from .store import FrameStore, build_store, load_store, save_store, store_settings

__all__ = ["STORE_MODES", "StoreDataModule", "store_mode", "placement", "batch_sizes"]

log = logging.getLogger(__name__)

STORE_MODES = ("auto", "device", "host", "off")


def store_mode(cfg: DataConfig, device: torch.device) -> str:
    """``device``, ``host`` or ``off`` as asked: ``auto`` is the store on the training device (GPU or CPU); on a CPU
    :func:`data_module` falls back to streaming when the frames pass the budget."""
    if cfg.store not in STORE_MODES:
        raise DataError(f"store={cfg.store!r}: choose one of {', '.join(STORE_MODES)}")
    if cfg.store == "auto":
        return "device"
    return cfg.store


def decode_limit(cfg: DataConfig, device: torch.device) -> int | None:
    """Bytes the decode may fill before it stops: on a CPU the frames live in RAM, so ``store_budget_mb`` and at
    most half the available RAM; on a GPU 80 % of the available RAM (the frames pass through host memory)."""
    ram = _available_ram()
    if device.type == "cpu":
        budget = int(cfg.store_budget_mb * 2**20)
        return min(budget, ram // 2) if ram else budget
    return int(0.8 * ram) if ram else None


def batch_sizes(count: int, batch_size: int) -> list[int]:
    """``count`` pairs in batches of ``batch_size``, remainder last; a remainder of one joins the batch before."""
    sizes = [batch_size] * (count // batch_size) + ([count % batch_size] if count % batch_size else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2] += 1
        sizes.pop()
    return sizes


def placement(mode: str, nbytes: int, budget_mb: float, device: torch.device) -> str:
    """Where the frames go: ``device`` unless a GPU store passes its budget (then pinned ``host`` memory)."""
    if mode == "device" and device.type != "cpu" and nbytes > budget_mb * 2**20:
        log.warning(
            "frame store of %s is over store_budget_mb=%s: kept in pinned host memory and gathered there each "
            "step; raise store_budget_mb to hold it on %s",
            _mib(nbytes),
            budget_mb,
            device,
        )
        return "host"
    return mode


def _available_ram() -> int | None:
    """Bytes the host can still give (``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


class _Epoch:
    """One epoch's batches (``len()`` known up front); iterating resumes after ``start`` batches."""

    def __init__(self, module: StoreDataModule, epoch: int, start: int) -> None:
        self.module, self.epoch, self.start = module, epoch, start
        self.sizes = batch_sizes(module.rank_videos, module.cfg.batch_size)

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[PairBatch]:
        return self.module._batches(self.epoch, self.sizes, self.start)


class StoreDataModule:
    """Training and meta batches sampled from a frame store (see the module doc)."""

    def __init__(
        self,
        cfg: DataConfig,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str | None = None,
        store: FrameStore | None = None,
        need_meta: bool = True,
    ) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        if device is None:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        mode = store_mode(cfg, self.device)
        self.store = self._placed(store if store is not None else self._obtain(), mode)
        self.stats = DataStats(decoded=self.store.num_videos, skipped=dict(self.store.skipped))
        self._where = self.store.frames.device  # where pairs are planned and gathered
        self._offsets = torch.tensor(self.store.offsets, dtype=torch.long).to(self._where)
        self._lengths = torch.tensor(self.store.lengths, dtype=torch.long).to(self._where)
        self._key_ids = key_ids(self.store.keys, device=self._where)
        self._train = [i for i, m in enumerate(self.store.meta) if not m]
        self._meta = sorted((i for i, m in enumerate(self.store.meta) if m), key=lambda i: self.store.keys[i])
        if need_meta and cfg.meta_fraction > 0 and not self._meta:
            raise DataError(self._no_meta())
        if need_meta and cfg.meta_fraction > 0 and len(self._meta) < 2:  # BatchNorm cannot train on one sample
            raise DataError(
                f"the meta split (meta_fraction={cfg.meta_fraction}, seed={cfg.seed}) holds 1 decodable video "
                f"({self.store.keys[self._meta[0]]}); meta batches need at least 2: raise meta_fraction or add videos"
            )
        if self.rank_videos < 2:
            raise DataError(
                f"{len(self._train)} training video(s) decoded from {cfg.source} for {world_size} process(es): "
                "NT-Xent needs at least 2 pairs per process; add videos or lower meta_fraction"
            )
        self._aug = cfg.augment_config()
        self._meta_frames: torch.Tensor | None = None
        self._epoch, self._position, self._complete, self._meta_drawn = 0, 0, False, 0
        self._resume: dict[str, Any] | None = None

    # -- the store: file, decode, placement ------------------------------------------------------------------
    def _obtain(self) -> FrameStore:
        """The store file when it exists, else every clip decoded (and written to the store file, if one is set)."""
        cfg = self.cfg
        limit = decode_limit(cfg, self.device)
        if cfg.store_file and Path(cfg.store_file).is_file():
            log.info("frame store: reading %s", cfg.store_file)
            return load_store(cfg.store_file, store_settings(cfg))
        log.info("frame store: decoding every clip of %s once (%d px)", cfg.source, cfg.image_size)
        store = build_store(cfg, limit_bytes=limit)
        if cfg.store_file and self.rank == 0:
            save_store(store, cfg.store_file)
            log.info("frame store: saved to %s", cfg.store_file)
        return store

    def _placed(self, store: FrameStore, mode: str) -> FrameStore:
        mode = placement(mode, store.nbytes, self.cfg.store_budget_mb, self.device)
        log.info("frame store: %d clips, %s, on %s", store.num_videos, _mib(store.nbytes), mode)
        if mode == "host":
            return store.to("cpu", pin=True)
        return store.to(self.device)

    # -- sizes -------------------------------------------------------------------------------------------------
    @property
    def num_videos(self) -> int:
        """Training videos over all ranks."""
        return len(self._train)

    @property
    def num_meta_videos(self) -> int:
        return len(self._meta)

    @property
    def rank_videos(self) -> int:
        """Pairs this rank takes per epoch (the same on every rank)."""
        return -(-len(self._train) // self.world_size)

    # -- training ----------------------------------------------------------------------------------------------
    def train_loader(self, epoch: int) -> _Epoch:
        """This rank's batches for ``epoch``; resumes mid-epoch after :meth:`load_state_dict`."""
        start = self._take_resume(epoch)
        self._epoch, self._position, self._complete = epoch, start, False
        return _Epoch(self, epoch, start)

    def plan(self, epoch: int) -> tuple[EpochPlan, list[int]]:
        """This rank's pairs of ``epoch`` in order (host permutation, device draws), and their videos on the host."""
        order = epoch_order(len(self._train), seed=self.cfg.seed, epoch=epoch)
        videos = torch.tensor(self._train, dtype=torch.long)[order]
        padded = torch.arange(self.rank, self.rank_videos * self.world_size, self.world_size) % len(self._train)
        on_device = videos.to(self._where, non_blocking=True)
        ids = item_ids(self._key_ids[on_device], seed=self.cfg.seed, purpose="train", draw=epoch)
        full = plan_epoch(
            self.cfg.pair_type,
            on_device,
            offsets=self._offsets,
            lengths=self._lengths,
            ids=ids,
            max_dist=self.cfg.max_dist,
        )
        rows = padded.to(self._where, non_blocking=True)
        plan = EpochPlan(full.videos[rows], full.frames[rows], full.weights[rows], full.ids[rows])
        return plan, videos[padded].tolist()

    def _batches(self, epoch: int, sizes: list[int], start: int) -> Iterator[PairBatch]:
        plan, order = self.plan(epoch)
        begin = sum(sizes[:start])
        for j in range(start, len(sizes)):
            end = begin + sizes[j]
            batch = self._batch(plan, order[begin:end], slice(begin, end))
            self._position = j + 1
            self.stats.batches += 1
            begin = end
            yield batch
        self._complete = True

    def _batch(self, plan: EpochPlan, videos: list[int], rows: slice) -> PairBatch:
        frames = self.store.frames
        idx = plan.frames[rows]
        got = frames[idx.reshape(-1)].view(*idx.shape, *frames.shape[1:])
        if got.device != self.device:  # a spilled store: gathered on the host, copied from page-locked memory
            got = (got.pin_memory() if self.device.type == "cuda" else got).to(self.device, non_blocking=True)
        weights = plan.weights[rows].to(self.device, non_blocking=True)
        views = mix_views(got, weights, self.cfg.pair_type)
        lam = weights[:, 0] if self.cfg.pair_type == "uscl" else torch.ones(len(videos), device=self.device)
        return PairBatch(
            views,
            lam,
            plan.ids[rows].to(self.device, non_blocking=True),
            [self.store.sources[v] for v in videos],
            [self.store.keys[v] for v in videos],
        )

    # -- meta split --------------------------------------------------------------------------------------------
    def meta_iterator(self) -> Iterator[PairBatch]:
        """Infinite meta batches (first frame of held-out videos), reshuffled every pass; resumes its count."""
        if not self._meta:
            raise DataError(self._no_meta())
        if self._meta_frames is None:
            first = self._offsets[torch.tensor(self._meta, dtype=torch.long).to(self._where)]
            self._meta_frames = self.store.frames[first].to(self.device)
        n = len(self._meta)
        bs = min(self.cfg.meta_batch_size, n)
        meta_keys = key_ids([self.store.keys[v] for v in self._meta])  # on the host, as the order: no device wait
        while True:
            perm = meta_batch(n, bs, seed=self.cfg.seed, rank=self.rank, drawn=self._meta_drawn)
            videos = [self._meta[i] for i in perm.tolist()]
            ids = item_ids(meta_keys[perm], seed=self.cfg.seed, purpose="meta", draw=self._meta_drawn, rank=self.rank)
            batch = PairBatch(
                self._meta_frames[perm.to(self.device, non_blocking=True)][:, None],
                torch.ones(bs, device=self.device),
                ids.to(self.device, non_blocking=True),
                [self.store.sources[v] for v in videos],
                [self.store.keys[v] for v in videos],
            )
            self._meta_drawn += 1
            yield batch

    def _no_meta(self) -> str:
        return (
            f"{self.cfg.source}: no held-out meta video among the {self.store.num_videos} decoded "
            f"(meta_fraction={self.cfg.meta_fraction}, seed={self.cfg.seed}, {len(self.store.skipped)} file(s) "
            "skipped); raise meta_fraction, change seed, or train without the meta step"
        )

    # -- device side -------------------------------------------------------------------------------------------
    def gpu_views(self, batch: PairBatch, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views, float ``[B, 3, S, S]`` on ``device`` (:func:`.batch.batch_views`: the items' keyed draws)."""
        return batch_views(batch, device, self._aug)

    # -- checkpointing -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": "frame_store",
            "epoch": self._epoch,
            "position": self._position,
            "complete": self._complete,
            "meta_drawn": self._meta_drawn,
            "world_size": self.world_size,
            "rank": self.rank,
            "batch_size": self.cfg.batch_size,
            "videos": len(self._train),
            "draws": DRAWS_VERSION,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)
        if state.get("kind") == "frame_store":
            self._meta_drawn = int(state["meta_drawn"])

    def _take_resume(self, epoch: int) -> int:
        sd, self._resume = self._resume, None
        if sd is None or sd.get("epoch") != epoch or sd.get("complete"):
            return 0
        now = ("frame_store", self.world_size, self.cfg.batch_size, len(self._train), DRAWS_VERSION)
        saved = (sd.get("kind"), sd.get("world_size"), sd.get("batch_size"), sd.get("videos"), sd.get("draws"))
        if saved != now:
            log.warning("data state saved as %s, now %s: epoch %s restarts", saved, now, epoch)
            return 0
        return int(sd["position"])
