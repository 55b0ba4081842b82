"""The data module end to end: ranks and workers, reproducibility, meta split, bad files, resume, cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch

pytest.importorskip("torchcodec")

from timm_uscl.training.data import DataConfig, DataError, PairDataModule


def _clip(path: Path, frames: int) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), 40 + 80 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _cfg(source: Path | str, **kw) -> DataConfig:
    base = dict(source=str(source), image_size=32, batch_size=1, num_workers=0, meta_fraction=0.0, drop_last=False)
    return DataConfig(**{**base, **kw})


def _keys(dm: PairDataModule, epoch: int = 0) -> list[str]:
    return [k for b in dm.train_loader(epoch) for k in b.keys]


def test_two_ranks_see_every_video_once(fixtures_dir: Path) -> None:
    r0 = _keys(PairDataModule(_cfg(fixtures_dir), rank=0, world_size=2))
    r1 = _keys(PairDataModule(_cfg(fixtures_dir), rank=1, world_size=2))
    assert len(r0) + len(r1) == 10 and set(r0).isdisjoint(r1) and len(set(r0) | set(r1)) == 10
    workers = PairDataModule(_cfg(fixtures_dir, num_workers=2, batch_size=2))
    keys = _keys(workers)
    assert sorted(keys) == sorted(set(r0) | set(r1)) and workers.stats.decoded == 10 and not workers.stats.skipped


def test_same_seed_same_batch_other_epoch_other_batch(synthetic_clips: list[Path]) -> None:
    src = synthetic_clips[0].parent
    batches = [next(iter(PairDataModule(_cfg(src, batch_size=3)).train_loader(0))) for _ in range(2)]
    assert batches[0].keys == batches[1].keys and torch.equal(batches[0].frames, batches[1].frames)
    views = [PairDataModule(_cfg(src)).gpu_views(b, "cpu") for b in batches]
    assert torch.equal(views[0][0], views[1][0]) and torch.equal(views[0][1], views[1][1])
    assert not torch.allclose(views[0][0], views[0][1])  # the two views differ
    other = next(iter(PairDataModule(_cfg(src, batch_size=3)).train_loader(1)))
    assert not torch.equal(other.frames[np.argsort(other.keys)], batches[0].frames[np.argsort(batches[0].keys)])


@pytest.mark.parametrize("pair_type,k", [("metauscl", 2), ("uscl", 3), ("simclr", 1)])
def test_pair_types_give_two_views(synthetic_clips: list[Path], pair_type: str, k: int) -> None:
    dm = PairDataModule(_cfg(synthetic_clips[0].parent, pair_type=pair_type, batch_size=3))
    batch = next(iter(dm.train_loader(0)))
    assert batch.frames.shape == (3, k, 1, 32, 32) and batch.frames.dtype == torch.uint8 and len(batch) == 3
    x1, x2 = dm.gpu_views(batch, "cpu")
    assert x1.shape == x2.shape == (3, 3, 32, 32) and torch.isfinite(x1).all()


def test_meta_split_never_overlaps_training(data_root: Path) -> None:
    cfg = _cfg(data_root / "covid_blues", meta_fraction=0.2, meta_batch_size=8)
    dm = PairDataModule(cfg)
    assert dm.num_videos + dm.num_meta_videos == 362
    train = {r["key"] for r in dm._train.rows}
    meta = {r["key"] for r in dm._meta.rows}
    assert train.isdisjoint(meta) and len(meta) == dm.num_meta_videos
    it = dm.meta_iterator()
    seen = set()
    for _ in range(dm.num_meta_videos // 8 + 1):  # cycles past one epoch of the meta split
        mb = next(it)
        assert len(mb) == 8 and mb.frames.shape == (8, 1, 1, 32, 32)
        seen |= set(mb.keys)
    assert seen <= meta and len(seen) > 8
    m1, m2 = dm.gpu_views(mb, "cpu")
    assert m1.shape == (8, 3, 32, 32) and not torch.allclose(m1, m2)


def test_bad_files_are_skipped_counted_and_short_clips_handled(
    tmp_path: Path, synthetic_clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    good = synthetic_clips[0].read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "notes.avi").write_text("not a video\n")
    (tmp_path / "empty.mkv").write_bytes(b"")
    (tmp_path / "README.txt").write_text("ignored: not a video extension\n")
    _clip(tmp_path / "one.mp4", 1)
    _clip(tmp_path / "two.mp4", 2)
    shutil.copy(synthetic_clips[1], tmp_path / "ok.mp4")
    dm = PairDataModule(_cfg(tmp_path, batch_size=2, num_workers=2))
    batches = list(dm.train_loader(0))
    assert {"random.mp4", "notes.avi", "empty.mkv"} <= set(dm.stats.skipped)
    assert dm.stats.decoded + len(dm.stats.skipped) == 7 and dm.stats.decoded >= 3
    assert sum(len(b) for b in batches) == dm.stats.decoded
    for b in batches:
        for key, views in zip(b.keys, b.frames):
            if key == "one.mp4":
                assert torch.equal(views[0], views[1])  # 1 frame: the same frame, augmented twice later
            if key == "two.mp4":
                assert abs(views[0].float().mean() - views[1].float().mean()) > 70  # frames 0 and 1, unmixed
    assert sum("skipping random.mp4" in r.getMessage() for r in caplog.records) == 1
    list(dm.train_loader(1))
    assert sum("skipping random.mp4" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_nothing_decodes_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "b.mp4").write_text("text")
    with pytest.raises(DataError, match="none of the 2 videos decoded.*a.mp4"):
        list(PairDataModule(_cfg(tmp_path)).train_loader(0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no video files"):
        PairDataModule(_cfg(tmp_path / "empty"))


def test_resume_mid_epoch_continues_where_it_stopped(fixtures_dir: Path) -> None:
    cfg = _cfg(fixtures_dir, batch_size=2, num_workers=2)
    full = _keys(PairDataModule(cfg), epoch=3)
    dm = PairDataModule(cfg)
    it = iter(dm.train_loader(3))
    done = [k for _ in range(2) for k in next(it).keys]
    state = dm.state_dict()
    resumed = PairDataModule(cfg)
    resumed.load_state_dict(state)
    rest = _keys(resumed, epoch=3)
    assert sorted(done + rest) == sorted(full) and set(done).isdisjoint(rest)
    assert resumed.stats.decoded == len(rest)  # consumed rows were skipped, not decoded


def test_frame_cache_serves_later_epochs(synthetic_clips: list[Path], tmp_path: Path) -> None:
    cfg = _cfg(synthetic_clips[0].parent, batch_size=3, cache_dir=str(tmp_path / "cache"))
    dm = PairDataModule(cfg)
    first = next(iter(dm.train_loader(0)))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    again = next(iter(PairDataModule(cfg).train_loader(0)))
    assert again.keys == first.keys and torch.equal(again.frames, first.frames)


# -- the real cause when nothing is left (L12) ----------------------------------------------------------------------


def _named_clips(tmp_path: Path, synthetic_clips: list[Path], names: list[str]) -> Path:
    root = tmp_path / "named"
    root.mkdir()
    for i, name in enumerate(names):
        shutil.copy(synthetic_clips[i % 3], root / name)
    return root


def test_an_empty_meta_split_is_the_named_cause_and_no_meta_runs_still_train(
    tmp_path: Path, synthetic_clips: list[Path]
) -> None:
    from timm_uscl.training.data.sources import meta_split_fn

    names = [f"clip{i}.mp4" for i in range(4)]
    assert not any(meta_split_fn(0.2, 0)({"key": n}) for n in names)
    root = _named_clips(tmp_path, synthetic_clips, names)
    with pytest.raises(DataError) as err:
        PairDataModule(_cfg(root, meta_fraction=0.2))
    message = str(err.value)
    assert "meta split" in message and "none of the 4 videos" in message and "filter" not in message
    dm = PairDataModule(_cfg(root, meta_fraction=0.2), need_meta=False)  # a run without the meta step
    assert dm.num_videos == 4 and dm.num_meta_videos == 0
    with pytest.raises(DataError, match="meta split"):
        next(dm.meta_iterator())


def test_a_meta_split_that_takes_every_video_is_the_named_cause(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    from timm_uscl.training.data.sources import meta_split_fn

    is_meta = meta_split_fn(0.9, 0)
    names = [n for n in (f"v{i}.mp4" for i in range(40)) if is_meta({"key": n})][:4]
    root = _named_clips(tmp_path, synthetic_clips, names)
    with pytest.raises(DataError) as err:
        PairDataModule(_cfg(root, meta_fraction=0.9))
    message = str(err.value)
    assert "took all 4 videos" in message and "meta_fraction=0.9" in message and "filter" not in message


def test_files_that_do_not_decode_are_named_as_the_cause(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    good = synthetic_clips[0].read_bytes()
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50000))
    (tmp_path / "text.mp4").write_text("hi\n")
    (tmp_path / "truncated.mp4").write_bytes(good[:1589])
    with pytest.raises(DataError) as err:
        list(PairDataModule(_cfg(tmp_path)).train_loader(0))
    message = str(err.value)
    assert "\n" not in message and "none of the 4 videos decoded" in message and "filter" not in message
    assert all(n in message for n in ("zero.mp4", "random.mp4", "text.mp4", "truncated.mp4"))


@pytest.mark.parametrize("size", [0, 4, 7])
def test_an_image_size_below_8_is_a_config_error(size: int) -> None:
    with pytest.raises(DataError, match=f"image_size={size}.*at least 8"):
        DataConfig(image_size=size)


def test_a_meta_split_of_one_video_is_a_named_error_not_a_batchnorm_traceback(clip_folder):
    from timm_uscl.training.data import DataConfig, PairDataModule
    from timm_uscl.training.data.sources import meta_split_fn
    from timm_uscl.training.errors import DataError

    keys = sorted(p.name for p in clip_folder.glob("*.mp4"))
    seed = next(s for s in range(200) if sum(meta_split_fn(0.2, s)({"key": k}) for k in keys) == 1)
    cfg = DataConfig(
        source=str(clip_folder),
        image_size=32,
        batch_size=2,
        num_workers=0,
        meta_batch_size=2,
        meta_fraction=0.2,
        seed=seed,
        cache_dir=None,
    )
    with pytest.raises(DataError, match="holds 1 decodable video .*at least 2"):
        next(PairDataModule(cfg).meta_iterator())
