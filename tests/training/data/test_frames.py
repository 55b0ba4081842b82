"""Frame videos: corpora shared as frame images per video train like videos (folders of frame folders, image rows
grouped by a video id, list-of-images rows), from frames the tests cut out of the fixture clips (never committed)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image

from timm_uscl.cli import main as cli
from timm_uscl.training.data import DataConfig, DataError, PairDataModule
from timm_uscl.training.data.cache import FrameCache
from timm_uscl.training.data.decode import decode_clip, read_frames
from timm_uscl.training.data.draws import item_id
from timm_uscl.training.data.pairs import item_pair
from timm_uscl.training.data.sources import SourceSpec, open_source

Frames = dict[str, list[np.ndarray]]


def _fixture_videos(fixtures_dir: Path) -> list[str]:
    with (fixtures_dir / "manifest.csv").open() as f:
        return [r["file"] for r in csv.DictReader(f) if r["fps"]]


@pytest.fixture(scope="session")
def clip_frames(fixtures_dir: Path) -> Frames:
    """The first 8 frames of each fixture clip, decoded with PyAV and shrunk to 48 px: a frame dump of them."""
    out: Frames = {}
    for rel in _fixture_videos(fixtures_dir):
        with av.open(str(fixtures_dir / rel)) as container:
            decoded = [f.to_ndarray(format="rgb24") for _, f in zip(range(8), container.decode(video=0))]
        out[Path(rel).stem] = [np.asarray(Image.fromarray(f).resize((48, 48))) for f in decoded]
    return out


def _save(image: np.ndarray, path: Path, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kw)
    return path


def _frame_folders(root: Path, frames: Frames, ext: str = ".png", videos: Sequence[str] | None = None) -> Path:
    """``root/<video>/frame<i><ext>`` (unpadded numbers: the natural order matters)."""
    for name in videos if videos is not None else sorted(frames):
        for i, image in enumerate(frames[name]):
            _save(image, root / name / f"frame{i}{ext}")
    return root


def _grey(value: int, size: int = 40) -> np.ndarray:
    return np.full((size, size), value, np.uint8)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def _cfg(source: object, **kw: object) -> DataConfig:
    base = dict(image_size=32, batch_size=2, num_workers=0, meta_fraction=0.0, drop_last=False, cache_dir=None)
    return DataConfig(source=source if isinstance(source, list) else str(source), **{**base, **kw})


def _keys(dm: PairDataModule, epoch: int = 0) -> list[str]:
    return [k for b in dm.train_loader(epoch) for k in b.keys]


def _row(root: Path | str, **spec: Any) -> dict:
    rows = open_source([SourceSpec(str(root), **spec)]).rows
    assert rows is not None
    return rows[0]


def _video(root: Path, key: str) -> dict:
    return next(r["video"] for r in open_source([SourceSpec(str(root))]).rows or [] if r["key"] == key)


def _means(frames: torch.Tensor) -> list[int]:
    return [round(float(f.float().mean())) for f in frames]


# -- 1. a folder of per-video frame folders -------------------------------------------------------------------------


@pytest.mark.parametrize("pair_type,k", [("metauscl", 2), ("uscl", 3), ("simclr", 1)])
def test_a_folder_of_frame_folders_trains_one_epoch_for_every_pair_type(
    tmp_path: Path, clip_frames: Frames, pair_type: str, k: int
) -> None:
    root = _frame_folders(tmp_path / "frames", clip_frames)
    dm = PairDataModule(_cfg(root, pair_type=pair_type))
    batches = list(dm.train_loader(0))
    assert sorted(k for b in batches for k in b.keys) == sorted(clip_frames) and not dm.stats.skipped
    assert all(b.frames.shape[1:] == (k, 1, 32, 32) and b.frames.dtype == torch.uint8 for b in batches)
    x1, x2 = dm.gpu_views(batches[0], "cpu")
    assert x1.shape == x2.shape == (2, 3, 32, 32) and torch.isfinite(x1).all()


def test_meta_batches_come_from_held_out_frame_folders(tmp_path: Path, clip_frames: Frames) -> None:
    root = _frame_folders(tmp_path / "frames", clip_frames)
    dm = PairDataModule(_cfg(root, meta_fraction=0.5, meta_batch_size=2, seed=1))
    train = set(_keys(dm))
    meta = next(dm.meta_iterator())
    assert meta.frames.shape == (2, 1, 1, 32, 32) and not set(meta.keys) & train
    assert dm.num_videos + dm.num_meta_videos == len(clip_frames)


def test_frames_play_in_natural_name_order_frame2_before_frame10(tmp_path: Path) -> None:
    for i in range(12):  # written in shuffled order; lexical order would put frame10 and frame11 after frame1
        j = (i * 5) % 12
        _save(_grey(10 + 20 * j), tmp_path / "root" / "clip" / f"frame{j}.png")
    row = _row(tmp_path / "root")
    assert [Path(f["path"]).name for f in row["video"]["frames"]][:4] == [
        "frame0.png",
        "frame1.png",
        "frame2.png",
        "frame3.png",
    ]
    assert _means(decode_clip(row["video"], 16)) == [10 + 20 * j for j in range(12)]
    assert _means(read_frames(row["video"], lambda n: (2, 10, 2), 16)) == [50, 210, 50]


def test_a_frame_video_decodes_to_exactly_what_its_video_gives(fixtures_dir: Path, tmp_path: Path) -> None:
    clip = fixtures_dir / "covid_blues" / "patient_5_R3.mp4"  # 7 frames, 350 px
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            _save(frame.to_ndarray(format="rgb24"), tmp_path / "root" / "patient_5_R3" / f"f{i}.png")  # lossless
    video = _row(tmp_path / "root")["video"]
    for grayscale in (True, False):
        want = decode_clip(clip, 32, grayscale=grayscale, decoder="pyav")
        got = decode_clip(video, 32, grayscale=grayscale)
        assert got.dtype == torch.uint8 and got.shape == want.shape == (7, 1 if grayscale else 3, 32, 32)
        assert torch.equal(got, want)  # same pixels, same filter: the same frames
    assert torch.equal(read_frames(video, lambda n: (n - 1, 0), 32), decode_clip(clip, 32, decoder="pyav")[[6, 0]])


def test_jpeg_frames_of_any_size_and_mode_resize_like_video_frames(tmp_path: Path, clip_frames: Frames) -> None:
    rgb = clip_frames["patient_1_L1"][0]
    folder = tmp_path / "root" / "mixed"
    _save(rgb, folder / "a1.jpg", quality=95)
    _save(np.asarray(Image.fromarray(rgb).resize((70, 30))), folder / "a2.png")  # another size and aspect
    Image.fromarray(rgb).convert("L").save(folder / "a3.bmp")
    Image.fromarray(rgb).convert("P").save(folder / "a4.tif")
    Image.fromarray(rgb).convert("RGBA").save(folder / "a5.png")
    video = _row(tmp_path / "root")["video"]
    grey, colour = decode_clip(video, 32), decode_clip(video, 32, grayscale=False)
    assert grey.shape == (5, 1, 32, 32) and colour.shape == (5, 3, 32, 32)
    want = decode_clip(_row(_frame_folders(tmp_path / "ref", {"ref": [rgb]}))["video"], 32)[0]
    for i in (0, 2, 3, 4):  # JPEG, L, palette, RGBA of the same picture: the same grey frame, give or take
        assert (grey[i].int() - want.int()).abs().float().mean() < 4.0, i


def test_16_bit_and_float_frames_scale_by_their_depth_and_out_of_range_floats_are_bad_frames(tmp_path: Path) -> None:
    """N3: PIL's ``convert`` clipped an ``I;16`` PNG (a DICOM export) at 255: every frame trained white."""
    ramp = np.arange(64 * 64).reshape(64, 64) % 256
    folder = tmp_path / "root" / "depths"
    folder.mkdir(parents=True)
    Image.fromarray(ramp.astype(np.uint8)).save(folder / "a1.png")
    Image.fromarray((ramp * 257).astype(np.uint16)).save(folder / "a2.png")  # I;16
    Image.fromarray((ramp * 257).astype(np.int32)).save(folder / "a3.tif")  # I
    Image.fromarray((ramp / 255).astype(np.float32)).save(folder / "a4.tif")  # F in [0, 1]
    Image.fromarray((ramp * 1000.0).astype(np.float32)).save(folder / "a5.tif")  # F of unknown scale: refused
    bad: list[tuple[str, str]] = []
    grey = decode_clip(_row(tmp_path / "root")["video"], 64, bad_frames=bad)
    assert grey.shape[0] == 4
    for i in (1, 2, 3):
        assert (grey[i].int() - grey[0].int()).abs().max() <= 1, i
    assert abs(grey.float().mean() - ramp.mean()) < 1
    assert len(bad) == 1 and "a5.tif" in bad[0][0] and "outside [0, 1]" in bad[0][1]


def test_frame_folders_listed_in_metadata_csv_carry_labels_filters_and_a_patient_meta_split(
    tmp_path: Path, clip_frames: Frames
) -> None:
    root = _frame_folders(tmp_path / "root", clip_frames)
    names = sorted(clip_frames)
    lines = ["file_name,patient,fold,source"] + [f"{n}/,p{i % 4},{i % 2},set{i % 3}" for i, n in enumerate(names)]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    rows = open_source([SourceSpec(str(root))], exclude={"fold": 1}).rows
    assert rows is not None and sorted(r["key"] for r in rows) == names[::2]
    assert {r["source"] for r in rows} == {"set0", "set1", "set2"} and all(r["fold"] == 0 for r in rows)
    dm = PairDataModule(_cfg(root, meta_fraction=0.5, meta_batch_size=2, meta_group_by="patient", seed=3))
    train, meta = dm._train.rows, dm._meta.rows
    assert train and meta and {r["patient"] for r in train}.isdisjoint({r["patient"] for r in meta})
    assert sorted(_keys(dm)) == sorted(r["key"] for r in train)


def test_each_frame_folder_is_one_shard_and_two_ranks_split_them(tmp_path: Path, clip_frames: Frames) -> None:
    root = _frame_folders(tmp_path / "frames", clip_frames)
    assert open_source([SourceSpec(str(root))]).dataset.num_shards == len(clip_frames)
    r0 = _keys(PairDataModule(_cfg(root), rank=0, world_size=2))
    r1 = _keys(PairDataModule(_cfg(root), rank=1, world_size=2))
    assert set(r0).isdisjoint(r1) and sorted(r0 + r1) == sorted(clip_frames)


def test_resume_mid_epoch_on_frame_folders_continues_where_it_stopped(tmp_path: Path, clip_frames: Frames) -> None:
    cfg = _cfg(_frame_folders(tmp_path / "frames", clip_frames), num_workers=2)
    full = _keys(PairDataModule(cfg), epoch=2)
    dm = PairDataModule(cfg)
    it = iter(dm.train_loader(2))
    done = [k for _ in range(2) for k in next(it).keys]
    resumed = PairDataModule(cfg)
    resumed.load_state_dict(dm.state_dict())
    rest = _keys(resumed, epoch=2)
    assert sorted(done + rest) == sorted(full) and set(done).isdisjoint(rest)
    assert resumed.stats.decoded == len(rest)


def test_the_frame_cache_keys_frame_videos_by_their_content(tmp_path: Path, clip_frames: Frames) -> None:
    root = _frame_folders(tmp_path / "frames", clip_frames, videos=["patient_1_L1", "patient_5_R3"])
    cache = tmp_path / "cache"
    cfg = _cfg(root, cache_dir=str(cache))
    first = next(iter(PairDataModule(cfg).train_loader(0)))
    assert len(list(cache.glob("*.npy"))) == 2
    again = next(iter(PairDataModule(cfg).train_loader(0)))
    assert again.keys == first.keys and torch.equal(again.frames, first.frames)
    video = _row(root)["video"]
    key = FrameCache(cache).key(video, 32, True, "pyav")
    frame = Path(video["frames"][3]["path"])
    _save(255 - np.asarray(Image.open(frame)), frame)  # same name, other pixels: another clip
    assert FrameCache(cache).key(_row(root)["video"], 32, True, "pyav") != key
    rewritten = decode_clip(_row(root)["video"], 32, cache=FrameCache(cache))
    assert torch.equal(rewritten, decode_clip(_row(root)["video"], 32)) and len(list(cache.glob("*.npy"))) == 3


def test_a_bad_frame_is_skipped_and_counted_and_a_video_without_a_good_one_is_named(
    tmp_path: Path, clip_frames: Frames, caplog: pytest.LogCaptureFixture
) -> None:
    root = _frame_folders(
        tmp_path / "frames", clip_frames, videos=["patient_1_L1", "patient_5_R3", "Vir_whitelung_h1n1"]
    )
    good = (root / "patient_1_L1" / "frame1.png").read_bytes()
    (root / "patient_1_L1" / "frame2.png").write_bytes(b"")  # zero bytes
    (root / "patient_1_L1" / "frame3.png").write_text("not an image\n")
    (root / "patient_1_L1" / "frame4.png").write_bytes(good[: len(good) // 2])  # truncated
    for frame in (root / "patient_5_R3").iterdir():
        frame.write_bytes(b"\x89PNG broken")
    dm = PairDataModule(_cfg(root, pair_type="uscl", batch_size=1, cache_dir=str(tmp_path / "cache")))
    keys = _keys(dm)
    assert sorted(keys) == ["Vir_whitelung_h1n1", "patient_1_L1"] and dm.stats.decoded == 2
    assert sorted(dm.stats.skipped_frames) == [f"patient_1_L1/frame{i}.png" for i in (2, 3, 4)]
    assert set(dm.stats.skipped) == {"patient_5_R3"} and "none of its 7 frames" in dm.stats.skipped["patient_5_R3"]
    assert sum("skipping frame patient_1_L1/frame2.png" in r.getMessage() for r in caplog.records) == 1
    video = _video(root, "patient_1_L1")
    assert len(decode_clip(video, 16)) == 5  # the frames that read
    bad: list[tuple[str, str]] = []
    picks: list[int] = []

    def choose(n: int) -> Sequence[int]:
        picks.append(n)
        return (2, 4)

    read_frames(video, choose, 16, bad_frames=bad)
    assert picks == [8, 5] and {name for name, _ in bad} == {f"patient_1_L1/frame{i}.png" for i in (2, 3, 4)}


def test_a_link_out_of_a_frame_folder_is_refused_before_anything_is_read(tmp_path: Path, clip_frames: Frames) -> None:
    root = _frame_folders(tmp_path / "root", clip_frames, videos=["patient_1_L1"])
    outside = _frame_folders(tmp_path / "outside", clip_frames, videos=["patient_5_R3"])
    (root / "patient_1_L1" / "frame99.png").symlink_to(outside / "patient_5_R3" / "frame0.png")
    with pytest.raises(DataError, match=r"frame99\.png.*outside") as err:
        open_source([SourceSpec(str(root))])
    assert "\n" not in str(err.value)
    (root / "patient_1_L1" / "frame99.png").unlink()
    (root / "linked").symlink_to(outside / "patient_5_R3", target_is_directory=True)
    with pytest.raises(DataError, match=r"linked.*outside"):
        open_source([SourceSpec(str(root))])


def test_video_files_and_frame_folders_mix_in_a_metadata_csv_and_a_scan_prefers_the_videos(
    tmp_path: Path, clip_frames: Frames, synthetic_clips: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    root = _frame_folders(tmp_path / "root", clip_frames, videos=["patient_1_L1", "patient_5_R3"])
    (root / "clip0.mp4").write_bytes(synthetic_clips[0].read_bytes())
    (root / "metadata.csv").write_text("file_name,label\nclip0.mp4,a\npatient_1_L1,b\npatient_5_R3,c\n")
    dm = PairDataModule(_cfg(root))
    assert sorted(_keys(dm)) == ["clip0.mp4", "patient_1_L1", "patient_5_R3"] and not dm.stats.skipped
    (root / "metadata.csv").unlink()
    with caplog.at_level(logging.WARNING):
        assert [r["key"] for r in open_source([SourceSpec(str(root))]).rows or []] == ["clip0.mp4"]
    assert any("2 folder(s) of frame images ignored" in r.getMessage() for r in caplog.records)


# -- 2. image rows grouped into videos by a column ------------------------------------------------------------------


def _imagefolder(root: Path, videos: dict[str, list[int]], patient: Callable[[str], str] = lambda v: v[:2]) -> Path:
    """Flat images ``img_<video>_<t>.png`` (grey level 10 * t) with metadata.csv ``file_name,video_id,t,patient``,
    rows in shuffled order; frame ``t`` values 2 and 10 in the same video test the natural order of numbers."""
    lines = ["file_name,video_id,t,patient"]
    for video, ts in videos.items():
        for t in ts:
            _save(_grey(10 * t), root / f"img_{video}_{t:03d}.png")
            lines.append(f"img_{video}_{t:03d}.png,{video},{t},{patient(video)}")
    (root / "metadata.csv").write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    return root


def test_an_imagefolder_grouped_by_a_video_id_column_trains_one_epoch(tmp_path: Path) -> None:
    videos = {f"v{i}": [10, 2, 1, 5] for i in range(6)}
    root = _imagefolder(tmp_path / "images", videos)
    row = _row(root, group_column="video_id", frame_column="t")
    assert _means(decode_clip(row["video"], 16)) == [10, 20, 50, 100]  # t = 1, 2, 5, 10
    assert "t" not in row and row["patient"] == row["key"][:2]  # a per-frame column is no video metadata
    dm = PairDataModule(_cfg(root, group_column="video_id", frame_column="t", pair_type="uscl"))
    assert sorted(_keys(dm)) == sorted(videos) and dm.stats.decoded == 6
    assert open_source([SourceSpec(str(root), group_column="video_id")]).dataset.num_shards == 6


def test_a_filter_or_meta_split_on_a_column_that_differs_between_frames_is_refused(tmp_path: Path) -> None:
    root = _imagefolder(tmp_path / "images", {"v0": [1, 2], "v1": [1, 2]})
    with pytest.raises(DataError, match=r"\['t'\] differ between the frames of one video"):
        open_source([SourceSpec(str(root), group_column="video_id")], filters={"t": 1})
    lines = (root / "metadata.csv").read_text().splitlines()
    (root / "metadata.csv").write_text("\n".join([lines[0], *(f"{ln[:-2]}p{i}" for i, ln in enumerate(lines[1:]))]))
    with pytest.raises(DataError, match=r"meta_group_by='patient'.*no such column") as err:
        PairDataModule(_cfg(root, group_column="video_id", meta_fraction=0.5, meta_group_by="patient"))
    assert "\n" not in str(err.value)


def _image_parquet(path: Path, videos: dict[str, list[int]]) -> Path:
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    rows = [(v, t) for v, ts in videos.items() for t in ts][::-1]
    data = {
        "image": [{"bytes": _png(_grey(10 * t)), "path": None} for _, t in rows],
        "video_id": [v for v, _ in rows],
        "t": [t for _, t in rows],
    }
    features = Features({"image": ImageFeature(), "video_id": Value("string"), "t": Value("int64")})
    Dataset.from_dict(data, features=features).to_parquet(str(path))
    return path


def test_parquet_image_rows_grouped_by_video_id_play_in_frame_column_order(tmp_path: Path) -> None:
    _image_parquet(tmp_path / "p" / "rows.parquet", {f"v{i}": [10, 2, 1] for i in range(4)})
    source = str(tmp_path / "p" / "*.parquet")
    row = _row(source, group_column="video_id", frame_column="t")
    assert _means(decode_clip(row["video"], 16)) == [10, 20, 100]
    dm = PairDataModule(_cfg(source, group_column="video_id", frame_column="t"))
    assert sorted(_keys(dm)) == ["v0", "v1", "v2", "v3"] and dm.num_videos == 4


def test_a_hub_image_dataset_grouped_by_video_id_streams_through_the_hub(hub: object, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    root = _imagefolder(tmp_path / "repo", {f"v{i}": [3, 1, 2] for i in range(6)}, patient=lambda v: f"p{v[1:]}")
    api = HfApi()
    api.create_repo("org/lus-frames", repo_type="dataset")
    api.upload_folder(repo_id="org/lus-frames", repo_type="dataset", folder_path=str(root))
    cfg = _cfg("org/lus-frames", group_column="video_id", frame_column="t", meta_fraction=0.5, meta_batch_size=2)
    dm = PairDataModule(DataConfig(**{**cfg.__dict__, "seed": 2, "meta_group_by": "patient"}))
    keys = _keys(dm)
    assert keys and len(keys) == len(set(keys)) == dm.num_videos and all(k.startswith("v") for k in keys)
    meta = next(dm.meta_iterator())
    assert not set(meta.keys) & set(keys) and dm.stats.skipped == {}
    video = next(r for r in dm._train.rows if r["key"] == keys[0])["video"]
    assert video["frames"][0]["path"].startswith("hf://") and _means(decode_clip(video, 16)) == [10, 20, 30]


def test_a_hub_repo_of_frame_folders_groups_by_its_folder_labels(
    hub: object, tmp_path: Path, clip_frames: Frames
) -> None:
    from huggingface_hub import HfApi

    videos = ["patient_1_L1", "patient_5_R3", "Vir_whitelung_h1n1"]
    root = _frame_folders(tmp_path / "repo", clip_frames, videos=videos)
    api = HfApi()
    api.create_repo("org/frame-folders", repo_type="dataset")
    api.upload_folder(repo_id="org/frame-folders", repo_type="dataset", folder_path=str(root))
    rows = open_source([SourceSpec("org/frame-folders", group_column="label")]).rows or []
    assert sorted(r["key"] for r in rows) == sorted(videos)  # the folder names, not class ids
    lengths = {r["key"]: len(decode_clip(r["video"], 16)) for r in rows}
    assert lengths == {v: len(clip_frames[v]) for v in videos}


# -- 3. one row per video holding a list of images ------------------------------------------------------------------


def _list_parquet(path: Path, videos: dict[str, list[bytes]]) -> Path:
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    data = {
        "frames": [[{"bytes": b, "path": None} for b in frames] for frames in videos.values()],
        "video_id": list(videos),
    }
    features = Features({"frames": List(ImageFeature()), "video_id": Value("string")})
    Dataset.from_dict(data, features=features).to_parquet(str(path))
    return path


def test_a_list_of_images_column_trains_one_row_per_video_and_skips_a_bad_frame(
    tmp_path: Path, clip_frames: Frames
) -> None:
    names = sorted(clip_frames)
    cfg = _cfg(str(tmp_path / "p" / "*.parquet"), video_column="frames", key_column="video_id", pair_type="uscl")
    ident = item_id(names[0], seed=cfg.seed, purpose="train", draw=0)
    bad = item_pair("uscl", len(clip_frames[names[0]]), ident).indices[0]  # a frame epoch 0 reads
    for part in range(2):  # two parquet files: two shards
        videos = {n: [_png(f) for f in clip_frames[n]] for n in names[part::2]}
        if part == 0:
            videos[names[0]][bad] = b"not a png"
        _list_parquet(tmp_path / "p" / f"part{part}.parquet", videos)
    source = str(tmp_path / "p" / "*.parquet")
    src = open_source([SourceSpec(source, video_column="frames", key_column="video_id")])
    assert src.dataset.num_shards == 2
    dm = PairDataModule(cfg)
    assert sorted(_keys(dm)) == names and list(dm.stats.skipped_frames) == [f"{names[0]} frame {bad}"]
    streamed = next(r for r in src.dataset if r["key"] == names[1])["video"]
    folder = _frame_folders(tmp_path / "f", clip_frames, videos=names[1:2])
    assert torch.equal(decode_clip(streamed, 32), decode_clip(_row(folder)["video"], 32))


def test_frame_folders_and_parquet_videos_train_together(
    tmp_path: Path, clip_frames: Frames, synthetic_clips: list[Path]
) -> None:
    from timm_uscl.training.data.publish import build_shards

    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in synthetic_clips:
        (folder / clip.name).write_bytes(clip.read_bytes())
    build_shards(folder, tmp_path / "pq", max_videos_per_shard=1)
    frames = _frame_folders(tmp_path / "frames", clip_frames, videos=["patient_1_L1", "patient_5_R3"])
    dm = PairDataModule(_cfg([str(frames), str(tmp_path / "pq" / "data" / "*.parquet")]))
    assert sorted(_keys(dm)) == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "patient_1_L1", "patient_5_R3"]


# -- the frame store and the trainer --------------------------------------------------------------------------------


def test_the_frame_store_holds_frame_folders_as_it_holds_videos(tmp_path: Path, clip_frames: Frames) -> None:
    from timm_uscl.training.data.store import build_store

    root = _frame_folders(tmp_path / "frames", clip_frames, videos=["patient_1_L1", "patient_5_R3", "Cov-Atlas+(45)"])
    store = build_store(_cfg(root), workers=1)
    assert sorted(store.keys) == ["Cov-Atlas+(45)", "patient_1_L1", "patient_5_R3"]
    assert store.lengths == [len(clip_frames[k]) for k in store.keys]  # patient_5_R3 has 7 frames
    i = store.keys.index("patient_5_R3")
    clip = store.frames[store.offsets[i] : store.offsets[i] + store.lengths[i]]
    assert torch.equal(clip, decode_clip(_video(root, "patient_5_R3"), 32))


def test_pretrain_trains_on_a_folder_of_frame_folders_from_the_command_line(
    tmp_path: Path, clip_frames: Frames
) -> None:
    root = _frame_folders(tmp_path / "frames", clip_frames)
    args = ["pretrain", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1", "--image-size", "32"]
    args += ["--workers", "0", "--batch-size", "3", "--set", "meta_batch_size=2", "--set", "cache_dir=null"]
    args += ["--set", "meta_fraction=0.3", "--no-progress"]
    assert cli(args) == 0
    assert (tmp_path / "run" / "export" / "model.safetensors").is_file()


# -- what is not a layout -------------------------------------------------------------------------------------------


def _loose_images(root: Path) -> None:
    _save(_grey(5), root / "a.png")


def _image_row_without_group(root: Path) -> None:
    _save(_grey(5), root / "a.png")
    (root / "metadata.csv").write_text("file_name,video_id\na.png,v0\n")


def _group_without_metadata(root: Path) -> None:
    _save(_grey(5), root / "v0" / "a.png")


@pytest.mark.parametrize(
    "make,kw,expect",
    [
        (lambda root: None, {}, "no video files"),
        (_loose_images, {}, "belong to no video"),
        (_image_row_without_group, {}, "is an image, not a video"),
        (_group_without_metadata, {"group_column": "video_id"}, "groups the images a metadata.csv lists"),
    ],
    ids=["empty", "loose_images", "image_row_without_group_column", "group_column_without_metadata"],
)
def test_an_unsupported_folder_layout_is_one_line_naming_the_accepted_layouts(
    tmp_path: Path, make: Callable[[Path], None], kw: dict, expect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    make(root)
    with pytest.raises(DataError) as err:
        PairDataModule(_cfg(root, **kw))
    message = str(err.value)
    assert "\n" not in message and expect in message
    assert "accepted layouts" in message or "group_column" in message
    sets = [a for k, v in kw.items() for a in ("--set", f"{k}={v}")]
    assert cli(["pretrain", "--data", str(root), "--out", str(tmp_path / "run"), "--workers", "0", *sets]) == 1
    assert expect in capsys.readouterr().err.strip().splitlines()[-1]


def test_image_rows_without_group_column_and_a_missing_video_column_name_the_fix(tmp_path: Path) -> None:
    source = str(_image_parquet(tmp_path / "rows.parquet", {"v0": [1, 2]}))
    with pytest.raises(DataError, match=r"one image per row; set group_column.*accepted layouts"):
        open_source([SourceSpec(source, video_column="image")])
    with pytest.raises(DataError, match=r"no video column 'video'.*group_column.*accepted layouts"):
        open_source([SourceSpec(source)])
    with pytest.raises(DataError, match=r"frame_column='t'.*set group_column"):
        DataConfig(frame_column="t")


def test_the_frame_store_counts_a_bad_frame_and_keys_its_file_by_the_grouping(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from timm_uscl.training.data import DataConfig
    from timm_uscl.training.data.store import build_store, store_settings

    for v in range(3):
        folder = tmp_path / "frames" / f"video{v}"
        folder.mkdir(parents=True)
        for f in range(4):
            Image.fromarray(np.full((16, 16), 40 * f + v, np.uint8)).save(folder / f"frame{f}.png")
    (tmp_path / "frames" / "video1" / "frame2.png").write_bytes(b"not an image")
    cfg = DataConfig(source=str(tmp_path / "frames"), image_size=16, meta_fraction=0.0, num_workers=1, cache_dir=None)
    store = build_store(cfg)
    assert sorted(store.lengths) == [3, 4, 4]
    assert any(name.endswith("frame2.png") for name in store.skipped)
    grouped = DataConfig(**{**cfg.__dict__, "group_column": "video_id"})
    import timm_uscl.training.data.store as store_module

    # the grouping alone keys the file (the corpus digest would read the source, which has no such column)
    monkeypatch.setattr(store_module, "corpus_digest", lambda cfg: None)
    assert store_settings(grouped) != store_settings(cfg)
