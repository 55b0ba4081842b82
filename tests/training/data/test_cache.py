"""The frame cache: keyed by content, never a reason to lose a video, and tidy after a crash."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from timm_uscl.training.data import cache as cache_module
from timm_uscl.training.data.cache import FrameCache
from timm_uscl.training.data.decode import read_frames

pytest.importorskip("torchcodec")


def _raw_clip(path: Path, level: int, frames: int = 4) -> Path:
    """An uncompressed clip: its byte size depends only on the frame count and size, never on the pixels."""
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("rawvideo", rate=10)
        s.width = s.height = 32
        s.pix_fmt = "rgb24"
        for _ in range(frames):
            img = np.full((32, 32, 3), level, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_a_replaced_video_of_the_same_size_and_mtime_is_not_served_stale_frames(tmp_path: Path) -> None:
    video = _raw_clip(tmp_path / "clip.avi", level=40)
    other = _raw_clip(tmp_path / "other.avi", level=200)
    assert video.stat().st_size == other.stat().st_size
    cache = FrameCache(tmp_path / "cache")
    first = read_frames(video, lambda n: (0,), 32, cache=cache)
    stamp = video.stat()
    video.write_bytes(other.read_bytes())  # `cp -p`: same inode, same size, mtime restored below
    os.utime(video, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert (video.stat().st_size, video.stat().st_mtime_ns) == (stamp.st_size, stamp.st_mtime_ns)
    again = read_frames(video, lambda n: (0,), 32, cache=FrameCache(tmp_path / "cache"))
    assert first.float().mean() < 60 and again.float().mean() > 180  # the new content, not the cached one


def test_each_file_is_hashed_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = _raw_clip(tmp_path / "clip.avi", level=90)
    calls: list[str] = []
    real = cache_module._hash_file

    def counting(path: str) -> bytes:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(cache_module, "_hash_file", counting)
    cache = FrameCache(tmp_path / "cache")
    for _ in range(3):
        read_frames(video, lambda n: (0, n - 1), 32, cache=cache)
    read_frames(video, lambda n: (0,), 32, grayscale=False, cache=FrameCache(tmp_path / "cache"))
    assert len(calls) == 1
    same_bytes = tmp_path / "copy.avi"
    same_bytes.write_bytes(video.read_bytes())
    assert cache.key(same_bytes, 32, True, "pyav") == cache.key(video, 32, True, "pyav")  # content, not path
    assert cache.key(video, 32, True, "pyav") != cache.key(video, 32, True, "opencv")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_cache_write_failure_keeps_the_frames_warns_once_and_removes_its_temp_file(
    tmp_path: Path,
    synthetic_clips: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    code: int,
) -> None:
    real_save = np.save

    def failing_save(file, arr, *args, **kwargs) -> None:
        real_save(file, arr[:1], *args, **kwargs)  # a partial file, then the disk is full
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(cache_module.np, "save", failing_save)
    cache = FrameCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        for clip in synthetic_clips:
            frames = read_frames(clip, lambda n: (0, n - 1), 32, cache=cache)
            assert torch.equal(frames, read_frames(clip, lambda n: (0, n - 1), 32))
    assert sum("frame cache" in r.getMessage() for r in caplog.records) == 1
    assert os.strerror(code) in caplog.text
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 KiB tmpfs: room for about two cached clips of 32 px. Needs root (CI runs as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the ENOSPC test above covers it")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_cache_disk_drops_no_video_from_training(tiny_disk: Path, clip_folder: Path) -> None:
    from timm_uscl.training.data import DataConfig, PairDataModule

    cfg = DataConfig(
        source=str(clip_folder),
        image_size=32,
        batch_size=2,
        num_workers=0,
        meta_fraction=0.0,
        drop_last=False,
        cache_dir=str(tiny_disk),
    )
    dm = PairDataModule(cfg)
    keys = [k for b in dm.train_loader(0) for k in b.keys]
    assert sorted(keys) == sorted(p.name for p in clip_folder.glob("*.mp4")) and not dm.stats.skipped
    assert not [p.name for p in tiny_disk.iterdir() if p.name.endswith(".tmp.npy")]
    again = [k for b in PairDataModule(cfg).train_loader(0) for k in b.keys]
    assert sorted(again) == sorted(keys)


def test_orphaned_temp_files_of_dead_processes_are_removed_when_the_cache_opens(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = root / f".{'a' * 32}.{dead_pid}.tmp.npy"
    live = root / f".{'b' * 32}.{os.getpid()}.tmp.npy"
    finished = root / f"{'c' * 32}.npy"
    for p in (orphan, live, finished):
        p.write_bytes(b"partial")
    FrameCache(root)
    assert not orphan.exists() and live.exists() and finished.exists()


def test_the_cache_key_names_the_decoder(synthetic_clips: list[Path], tmp_path: Path) -> None:
    from timm_uscl.training.data.decode import decode_clip

    cache = FrameCache(tmp_path / "cache")
    decode_clip(synthetic_clips[0], 32, cache=cache, decoder="pyav")
    decode_clip(synthetic_clips[0], 32, cache=cache, decoder="torchcodec")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert decode_clip(synthetic_clips[0], 32, cache=cache, decoder="pyav").shape == (24, 1, 32, 32)
