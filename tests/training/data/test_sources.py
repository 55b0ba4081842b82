"""Sources and decoding: every fixture container, shards per file, metadata filters, parquet shards."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchcodec")

from timm_uscl.training.data.cache import FrameCache
from timm_uscl.training.data.decode import read_frames
from timm_uscl.training.data.sources import SourceSpec, meta_split_fn, open_source
from timm_uscl.training.errors import DataError


def _manifest_videos(fixtures_dir: Path) -> list[dict[str, str]]:
    with (fixtures_dir / "manifest.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["fps"]]


def test_every_fixture_container_decodes(fixtures_dir: Path, tmp_path: Path) -> None:
    videos = _manifest_videos(fixtures_dir)
    assert {Path(r["file"]).suffix for r in videos} >= {".mp4", ".mov", ".mpeg", ".avi", ".gif"}
    cache = FrameCache(tmp_path / "cache")
    for r in videos:
        path = fixtures_dir / r["file"]
        lengths: list[int] = []
        frames = read_frames(path, lambda n, seen=lengths: seen.append(n) or (0, n - 1), 32)
        assert frames.shape == (2, 1, 32, 32) and frames.dtype.is_floating_point is False
        # MPEG-2 program streams lose a few tail frames to torchcodec; everything else is exact
        assert 0.9 * int(r["frames"]) <= lengths[-1] <= int(r["frames"]), r["file"]
        whole = read_frames(path, lambda n: range(n), 32, cache=cache)
        assert len(whole) == lengths[-1] or r["container"] == "mpeg"
        again = read_frames(path, lambda n: (0, n - 1), 32, cache=cache)  # served from the cache
        assert again.shape == (2, 1, 32, 32)
    rgb = read_frames(fixtures_dir / videos[0]["file"], lambda n: (0,), 40, grayscale=False)
    assert rgb.shape == (1, 3, 40, 40)


def test_local_folder_streams_one_shard_per_video(fixtures_dir: Path) -> None:
    src = open_source([SourceSpec(str(fixtures_dir))])
    names = {Path(r["file"]).name for r in _manifest_videos(fixtures_dir)}
    assert src.dataset.num_shards == len(names) == 10
    rows = list(src.dataset)
    assert {r["key"] for r in rows} == names and "Cov-Atlas+(45).gif" in names
    assert {r["source"] for r in rows} == {"fixtures"}


def test_metadata_filters_and_exclusion(data_root: Path) -> None:
    blues = str(data_root / "covid_blues")
    everything = open_source([SourceSpec(blues)])
    assert len(everything.rows) == 362
    no_fold0 = open_source([SourceSpec(blues)], exclude={"fold": 0})
    assert len(no_fold0.rows) == 362 - 71 and all(r["fold"] != 0 for r in no_fold0.rows)
    convex_cc_by = open_source(
        [SourceSpec(str(data_root / "pocus"))], filters={"probe": "convex", "licence": ["CC-BY-4.0", "CC-BY-2.0"]}
    )
    assert convex_cc_by.rows and all(
        r["probe"] == "convex" and r["licence"].startswith("CC-BY-") for r in convex_cc_by.rows
    )
    assert len({r["source"] for r in convex_cc_by.rows}) > 1  # the metadata's source column names sub-datasets
    with pytest.raises(DataError, match="not in the metadata"):
        open_source([SourceSpec(blues)], filters={"probe_type": "linear"})
    with pytest.raises(DataError, match="no video left"):
        open_source([SourceSpec(blues)], filters={"fold": 99})


def test_meta_split_is_by_identity_and_deterministic(data_root: Path) -> None:
    rows = open_source([SourceSpec(str(data_root / "covid_blues"))]).rows
    is_meta = meta_split_fn(0.2, seed=0)
    meta = {r["key"] for r in rows if is_meta(r)}
    assert 0.12 < len(meta) / len(rows) < 0.28
    assert meta == {r["key"] for r in reversed(rows) if meta_split_fn(0.2, seed=0)(r)}
    assert meta != {r["key"] for r in rows if meta_split_fn(0.2, seed=1)(r)}
    by_patient = meta_split_fn(0.2, seed=0, group_column="patient")
    held = {r["patient"] for r in rows if by_patient(r)}
    assert all(by_patient(r) == (r["patient"] in held) for r in rows)  # whole patients on one side


def test_parquet_shards_with_embedded_bytes(synthetic_clips: list[Path], tmp_path: Path) -> None:
    from timm_uscl.training.data.publish import build_shards

    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in synthetic_clips:
        (folder / clip.name).write_bytes(clip.read_bytes())
    build_shards(folder, tmp_path / "out", max_videos_per_shard=1)
    src = open_source([SourceSpec(str(tmp_path / "out" / "data" / "*.parquet"))])
    assert src.dataset.num_shards == 3
    rows = list(src.dataset)
    assert sorted(r["key"] for r in rows) == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    frames = read_frames(rows[0]["video"], lambda n: (n - 1,), 32)
    assert frames.shape == (1, 1, 32, 32) and rows[0]["video"]["bytes"]
    assert np.asarray(frames).std() > 0
