"""The frame store: every clip decoded once into one uint8 tensor, kept where training samples from it.

Why: a GPU lent for minutes cannot wait on CPU decoding. COVID-BLUES at 64² grey is 31,746 frames = 124 MiB, a
rounding error in GPU memory; decoded once, a whole epoch of pairs is a few gathers on the device (see
:mod:`.sampling` and :mod:`.store_module`), with no worker, no per-item host work and no partial batches.

* **Contents.** ``frames`` uint8 ``[N, C, S, S]`` (C = 1 grey by default, 3 with ``grayscale=False``), the clips
  back to back; ``offsets``/``lengths`` int64 ``[V]`` locate each clip; ``keys``, ``sources`` and ``meta`` (the
  held-out meta split) per clip, on the host. Clips come from the same sources, filters, exclusions and seeded
  meta split as the streaming pipeline (:func:`.sources.open_source`, :func:`.sources.meta_split_fn`), decoded
  by :func:`.decode.decode_clip` (whole clips, resized at decode time, ``cfg.decoder``'s backend); files that do
  not decode are skipped, logged once and counted in ``skipped``, as the streaming pipeline does.
* **Placement.** :meth:`FrameStore.to` moves the frames to the training device, or to pinned host memory (then
  each step gathers its frames on the host and copies them over). While decoding, the running size is checked
  against a limit, so a store that cannot fit stops early with both sizes in the message.
* **File.** :func:`save_store` / :func:`load_store` write and read one file: a JSON header (settings, keys,
  sources, lengths, meta flags, what was skipped, a hash per chunk) and the frames in chunks of whole clips,
  raw or xz-compressed after a per-clip temporal delta (4x smaller on COVID-BLUES: ultrasound frames change
  little from one to the next). No pickle: a file from elsewhere cannot run code. It is how the device bundle
  ships decoded data to a machine that has no video decoder. Decoded frames are a derivative: for CC BY-NC-ND
  data such as COVID-BLUES they are for your own use, on your own machines, never shared or committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, StoreBudgetError
from .cache import FrameCache, content_digest, remove_orphans
from .config import DataConfig
from .decode import decode_clip, resolve_decoder
from .sources import meta_split_fn, open_source

__all__ = [
    "STORE_FORMAT",
    "FrameStore",
    "build_store",
    "save_store",
    "load_store",
    "store_settings",
    "corpus_digest",
]

log = logging.getLogger(__name__)

STORE_FORMAT = 1
_MAGIC = b"USCL-FRAMES\x00"
_CHUNK_BYTES = 16 << 20  # whole clips per chunk, about this many raw bytes: chunks (de)compress in parallel


@dataclass
class FrameStore:
    """Decoded clips back to back (see the module doc); ``settings`` says what they were decoded with."""

    frames: torch.Tensor
    lengths: list[int]
    keys: list[str]
    sources: list[str]
    meta: list[bool]
    settings: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offsets: list[int] = [0, *np.cumsum(self.lengths, dtype=np.int64)[:-1].tolist()] if self.lengths else []

    @property
    def num_videos(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        return self.frames.numel() * self.frames.element_size()

    def to(self, device: torch.device | str, pin: bool = False) -> FrameStore:
        """The same store with its frames on ``device`` (``pin``: page-locked host memory, for fast copies)."""
        frames = self.frames.to(device)
        if pin and frames.device.type == "cpu" and torch.cuda.is_available():
            frames = frames.pin_memory()
        return replace(self, frames=frames)


def store_settings(cfg: DataConfig) -> dict[str, Any]:
    """What decides a store's contents: frames must be re-decoded when any of these changes."""
    return {
        "image_size": cfg.image_size,
        "grayscale": cfg.grayscale,
        "filters": cfg.filters,
        "exclude": cfg.exclude,
        "meta_fraction": cfg.meta_fraction,
        "seed": cfg.seed,
        "meta_group_by": cfg.meta_group_by,
        "origin": [cfg.source] if isinstance(cfg.source, str) else list(cfg.source),
        # what makes a row and its frames: a different grouping or column is a different corpus
        "split": cfg.split,
        "video_column": cfg.video_column,
        "key_column": cfg.key_column,
        "source_column": cfg.source_column,
        "group_column": cfg.group_column,
        "frame_column": cfg.frame_column,
        "extensions": list(cfg.extensions),
        "corpus": corpus_digest(cfg),  # the clips themselves: a folder's name does not say which (N5)
    }


def corpus_digest(cfg: DataConfig) -> str | None:
    """``<clips>:<digest>`` of the clips ``cfg`` reads (their keys and contents, in key order), or None when a
    source is not on this machine (a Hub dataset, pinned by its revision; a device bundle ships frames without
    the folder they came from).

    Why: data identified by its name is not identified. A store file of ``A/videos`` was reused for ``B/videos``
    (N5) and ``--resume`` continued on a folder half of whose videos were gone (N7), both with rc 0. Contents are
    hashed once per process (:func:`.cache.content_digest`, which the frame cache shares)."""
    specs = cfg.sources()
    if not all(os.path.exists(spec.source) for spec in specs):
        return None
    rows = open_source(specs, cfg.filters, cfg.exclude).rows
    if rows is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    for key, digest in sorted((str(r["key"]), content_digest(r["video"]).hex()) for r in rows):
        h.update(f"{key}\0{digest}\n".encode())
    return f"{len(rows)}:{h.hexdigest()}"


# ---------------------------------------------------------------------------------------------------- decode


def _rows(cfg: DataConfig) -> Iterator[tuple[dict[str, Any], bool]]:
    """Training rows, then held-out meta rows, each with its meta flag (the streaming pipeline's two sources)."""
    is_meta = meta_split_fn(cfg.meta_fraction, cfg.seed, cfg.meta_group_by)
    specs = cfg.sources()
    train = open_source(specs, cfg.filters, cfg.exclude, split=lambda r: not is_meta(r))
    meta = open_source(specs, cfg.filters, cfg.exclude, split=is_meta) if cfg.meta_fraction > 0 else None
    for source, flag in ((train, False), (meta, True)):
        if source is not None:
            for row in source.rows if source.rows is not None else source.dataset:
                yield row, flag


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@dataclass
class _Clips:
    """Decoded clips as they arrive, with what was skipped and a running size checked against a limit."""

    limit: int | None
    clips: list[torch.Tensor] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    meta: list[bool] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    bad_frames: list[tuple[str, str]] = field(default_factory=list)  # frames of frame videos that did not read
    total: int = 0

    def add(self, row: Mapping[str, Any], flag: bool, got: torch.Tensor | str, bad: list[tuple[str, str]]) -> None:
        self.bad_frames += bad
        if isinstance(got, str):
            log.warning("skipping %s: %s", row["key"], got)
            self.skipped[row["key"]] = got
            return
        self.total += got.numel()
        if self.limit is not None and self.total > self.limit:
            raise StoreBudgetError(
                f"{row['key']}: the decoded frames pass {_gib(self.total)} after {len(self.keys) + 1} clips, over "
                f"the store's limit of {_gib(self.limit)}; raise store_budget_mb, lower image_size, or set "
                "store=off to stream from the files"
            )
        self.clips.append(got.contiguous())
        self.lengths.append(len(got))
        self.keys.append(row["key"])
        self.sources.append(row["source"])
        self.meta.append(flag)


def build_store(cfg: DataConfig, limit_bytes: int | None = None, workers: int | None = None) -> FrameStore:
    """Decode every clip of ``cfg``'s sources once (threads: the decoder releases the GIL), on the CPU.

    ``limit_bytes``: stop with a :class:`~..errors.StoreBudgetError` as soon as the decoded frames pass it.
    """
    cache = FrameCache(cfg.cache_dir) if cfg.cache_dir else None
    backend = resolve_decoder(cfg.decoder)  # once, here: the choice is logged once
    got = _Clips(limit_bytes)

    def work(item: tuple[dict[str, Any], bool]) -> tuple[dict[str, Any], bool, torch.Tensor | str, list]:
        row, flag = item
        bad: list[tuple[str, str]] = []  # a bad frame of a frame video is skipped and counted, like a bad video
        try:
            clip = decode_clip(
                row["video"], cfg.image_size, grayscale=cfg.grayscale, cache=cache, decoder=backend, bad_frames=bad
            )
        except Exception as e:  # noqa: BLE001 - any bad file is skipped and reported, never fatal
            return row, flag, str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}", bad
        return row, flag, clip if len(clip) else "no frame decodes", bad

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the clips decode in parallel threads already: one intra-op thread each
    pool = ThreadPoolExecutor(max_workers=max(1, workers if workers is not None else cfg.num_workers))
    try:
        for result in pool.map(work, _rows(cfg)):
            got.add(*result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an early stop does not wait for the clips still queued
        torch.set_num_threads(threads)
    if not got.clips:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(got.skipped.items())[:10]) or "no rows"
        raise DataError(f"no video decoded from {cfg.source}; skipped {reasons}")
    frames = torch.cat(got.clips)
    for name, reason in got.bad_frames:  # "<video>/<frame>" beside the skipped videos' keys
        got.skipped.setdefault(name, reason)
    return FrameStore(frames, got.lengths, got.keys, got.sources, got.meta, store_settings(cfg), got.skipped)


# ---------------------------------------------------------------------------------------------------- file


def _delta(frames: np.ndarray, lengths: Iterable[int]) -> np.ndarray:
    """Each frame minus the one before it in its clip (uint8, wrapping); first frames kept."""
    out = frames.copy()
    out[1:] -= frames[:-1]
    starts = np.concatenate([[0], np.cumsum(list(lengths))[:-1]]).astype(np.int64)
    out[starts] = frames[starts]
    return out


def _undelta(deltas: np.ndarray, lengths: Iterable[int]) -> np.ndarray:
    out = np.empty_like(deltas)
    start = 0
    for n in lengths:
        np.cumsum(deltas[start : start + n], axis=0, dtype=np.uint8, out=out[start : start + n])
        start += n
    return out


def _chunks(lengths: list[int], frame_bytes: int) -> list[tuple[int, int]]:
    """Ranges of whole clips of about ``_CHUNK_BYTES`` each."""
    out, start, size = [], 0, 0
    for i, n in enumerate(lengths):
        size += n * frame_bytes
        if size >= _CHUNK_BYTES:
            out.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(lengths):
        out.append((start, len(lengths)))
    return out


def _encode(raw: np.ndarray, lengths: list[int], codec: str) -> bytes:
    if codec == "raw":
        return raw.tobytes()
    return lzma.compress(_delta(raw, lengths).tobytes(), format=lzma.FORMAT_XZ, preset=6)


def save_store(store: FrameStore, path: str | os.PathLike, codec: str = "raw", workers: int = 2) -> Path:
    """Write ``store`` to ``path`` (atomically; never over an existing file). ``codec``: ``raw`` (fast, a cache)
    or ``xz`` (about 4x smaller on ultrasound, and slow: 3-10 core-minutes for 124 MiB; for shipping)."""
    path = Path(path)
    if codec not in ("raw", "xz"):
        raise DataError(f"codec={codec!r}: choose raw or xz")
    if path.exists():
        raise DataError(f"{path}: already exists; the frame store is never overwritten, delete it or pick another")
    frames = store.frames.cpu().numpy()
    frame_bytes = int(np.prod(frames.shape[1:]))
    ranges = _chunks(store.lengths, frame_bytes)
    starts = store.offsets + [int(frames.shape[0])]

    def encode(r: tuple[int, int]) -> bytes:
        return _encode(frames[starts[r[0]] : starts[r[1]]], store.lengths[r[0] : r[1]], codec)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # lzma releases the GIL
        payloads = list(pool.map(encode, ranges))
    header = {
        "format": STORE_FORMAT,
        "codec": codec,
        "frame_shape": list(frames.shape[1:]),
        "settings": store.settings,
        "keys": store.keys,
        "sources": store.sources,
        "lengths": store.lengths,
        "meta": store.meta,
        "skipped": store.skipped,
        "chunks": [
            {"videos": list(r), "bytes": len(p), "blake2b": hashlib.blake2b(p, digest_size=16).hexdigest()}
            for r, p in zip(ranges, payloads)
        ],
    }
    blob = json.dumps(header).encode()
    try:
        _write_new(path, [_MAGIC + struct.pack("<Q", len(blob)) + blob, *payloads])
    except FileExistsError:
        raise DataError(f"{path}: written meanwhile by another process; the frame store is never overwritten") from None
    except OSError as e:
        raise DataError(f"{path}: cannot write the frame store ({e.strerror}); pick a writable store_file") from e
    return path


def _write_new(path: Path, blocks: list[bytes]) -> None:
    """Write a new file through a temporary one; the final link fails rather than replace an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a write killed by SIGKILL leaves a file the next write can tell is orphaned (N8)
    remove_orphans(path.parent, re.compile(rf"^\.{re.escape(path.name)}\.(?P<pid>\d+)\.[^.]+\.tmp$"))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for block in blocks:
                f.write(block)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links (some sandboxes): check, then rename
            if path.exists():
                raise FileExistsError(path) from None
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _read_header(f: Any, path: Path) -> dict[str, Any]:
    head = f.read(len(_MAGIC) + 8)
    if len(head) < len(_MAGIC) + 8 or head[: len(_MAGIC)] != _MAGIC:
        raise DataError(f"{path}: not a timm-uscl frame store; point store_file at a file save_store wrote")
    (size,) = struct.unpack("<Q", head[len(_MAGIC) :])
    try:
        header = json.loads(f.read(size))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: damaged frame store header ({e}); rebuild the file") from e
    if header.get("format") != STORE_FORMAT:
        raise DataError(f"{path}: frame store format {header.get('format')}, this version reads {STORE_FORMAT}")
    return header


def _source_names(origin: Any) -> list[str]:
    """The data a store was decoded from, by name: ``../shared/data/covid_blues``, ``covid_blues`` and the Hub id
    ``org/COVID-BLUES`` all name ``covid_blues`` (a bundle carries the frames, not the folder it came from)."""
    names = origin if isinstance(origin, list | tuple) else [origin]
    return [str(n).rstrip("/").rsplit("/", 1)[-1].lower().replace("-", "_") for n in names if n is not None]


def _check_settings(path: Path, stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    """The file must hold what this run would decode: the same data (by name, and where the data is on this
    machine by the digest of its clip list and contents) read the same way (its meta split is recomputed when
    that can be done)."""
    keys = ["image_size", "grayscale", "filters", "exclude", "split", "video_column", "key_column", "source_column"]
    keys += ["group_column", "frame_column", "extensions"]
    if stored.get("meta_group_by") or wanted.get("meta_group_by"):
        keys += ["meta_fraction", "seed", "meta_group_by"]  # a group column is not kept: the split must match
    run = json.loads(json.dumps({k: wanted.get(k) for k in keys}))  # as the header stores them (tuples -> lists)
    diff = [f"{k}={stored.get(k)!r} (run: {run[k]!r})" for k in keys if stored.get(k) != run[k]]
    if _source_names(stored.get("origin")) != _source_names(wanted.get("origin")):
        diff.insert(0, f"data {stored.get('origin')!r} (run: {wanted.get('origin')!r})")
    elif wanted.get("corpus") is not None and stored.get("corpus") != wanted["corpus"]:
        clips = str(stored.get("corpus") or "unrecorded:").split(":")[0]  # a store of an older version: unknown
        diff.insert(
            0, f"other clips of {stored.get('origin')!r} ({clips} clips; run: {wanted['corpus'].split(':')[0]})"
        )
    if diff:
        raise DataError(
            f"{path}: frame store decoded with other settings: {', '.join(diff)}; "
            "use the same settings, or another store_file to decode again"
        )


def load_store(
    path: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    pin: bool = False,
) -> FrameStore:
    """Read a store file into a tensor on ``device`` (``pin``: page-locked host memory when a GPU is present);
    ``settings`` (:func:`store_settings`) must match the file's."""
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read the frame store ({e.strerror}); fix the path or set store_file") from e
    with f:
        header = _read_header(f, path)
        payloads = [f.read(c["bytes"]) for c in header["chunks"]]
    if settings is not None:
        _check_settings(path, header["settings"], settings)
    for c, p in zip(header["chunks"], payloads):
        if len(p) != c["bytes"] or hashlib.blake2b(p, digest_size=16).hexdigest() != c["blake2b"]:
            raise DataError(f"{path}: truncated or damaged frame store (chunk {c['videos']}); rebuild the file")
    lengths, shape = header["lengths"], tuple(header["frame_shape"])
    pinned = pin and torch.device(device).type == "cpu" and torch.cuda.is_available()
    frames = torch.empty((sum(lengths), *shape), dtype=torch.uint8, device=device, pin_memory=pinned)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def decode_chunk(args: tuple[dict[str, Any], bytes]) -> None:
        c, p = args
        a, b = c["videos"]
        raw = np.frombuffer(bytearray(p) if header["codec"] == "raw" else lzma.decompress(p), dtype=np.uint8)
        clip = raw.reshape(-1, *shape)
        if header["codec"] == "xz":
            clip = _undelta(clip, lengths[a:b])
        frames[int(starts[a]) : int(starts[b])].copy_(torch.from_numpy(np.ascontiguousarray(clip)))

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(decode_chunk, zip(header["chunks"], payloads)))
    store = FrameStore(
        frames, lengths, header["keys"], header["sources"], header["meta"], header["settings"], header["skipped"]
    )
    if settings is not None and not settings.get("meta_group_by"):  # the split by key, for this run's seed
        is_meta = meta_split_fn(settings["meta_fraction"], settings["seed"])
        store.meta = [is_meta({"key": k}) for k in store.keys]
        store.settings = {**store.settings, **{k: settings[k] for k in ("meta_fraction", "seed")}}
    return store
