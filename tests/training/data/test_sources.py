"""Sources and decoding: every fixture container, shards per file, metadata filters, parquet shards."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

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

        def first_and_last(n: int, seen: list[int] = lengths) -> tuple[int, int]:
            seen.append(n)
            return (0, n - 1)

        frames = read_frames(path, first_and_last, 32)
        assert frames.shape == (2, 1, 32, 32) and frames.dtype.is_floating_point is False
        assert lengths[-1] == int(r["frames"]), r["file"]  # the MPEG-2 stream too (see decode.py: frame counts)
        whole = read_frames(path, lambda n: range(n), 32, cache=cache)
        assert len(whole) == lengths[-1]
        again = read_frames(path, lambda n: (0, n - 1), 32, cache=cache)  # served from the cache
        assert again.shape == (2, 1, 32, 32)
    rgb = read_frames(fixtures_dir / videos[0]["file"], lambda n: (0,), 40, grayscale=False)
    assert rgb.shape == (1, 3, 40, 40)


def _listed(specs: list[SourceSpec], **kwargs: Any) -> list[dict[str, Any]]:
    """The rows of sources listed up front (local folders: a stream would have none)."""
    rows = open_source(specs, **kwargs).rows
    assert rows is not None
    return rows


def test_local_folder_streams_one_shard_per_video(fixtures_dir: Path) -> None:
    src = open_source([SourceSpec(str(fixtures_dir))])
    names = {Path(r["file"]).name for r in _manifest_videos(fixtures_dir)}
    assert src.dataset.num_shards == len(names) == 10
    rows = list(src.dataset)
    assert {r["key"] for r in rows} == names and "Cov-Atlas+(45).gif" in names
    assert {r["source"] for r in rows} == {"fixtures"}


def test_metadata_filters_and_exclusion(data_root: Path) -> None:
    blues = str(data_root / "covid_blues")
    everything = _listed([SourceSpec(blues)])
    assert len(everything) == 362
    no_fold0 = _listed([SourceSpec(blues)], exclude={"fold": 0})
    assert len(no_fold0) == 362 - 71 and all(r["fold"] != 0 for r in no_fold0)
    convex_cc_by = _listed(
        [SourceSpec(str(data_root / "pocus"))], filters={"probe": "convex", "licence": ["CC-BY-4.0", "CC-BY-2.0"]}
    )
    assert convex_cc_by and all(r["probe"] == "convex" and r["licence"].startswith("CC-BY-") for r in convex_cc_by)
    assert len({r["source"] for r in convex_cc_by}) > 1  # the metadata's source column names sub-datasets
    with pytest.raises(DataError, match="not in the metadata"):
        open_source([SourceSpec(blues)], filters={"probe_type": "linear"})
    with pytest.raises(DataError, match="no video left"):
        open_source([SourceSpec(blues)], filters={"fold": 99})


def test_meta_split_is_by_identity_and_deterministic(data_root: Path) -> None:
    rows = _listed([SourceSpec(str(data_root / "covid_blues"))])
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


# -- what a metadata.csv may point at (L9), how it must be written (L4), and listing each file once (L15) -----------


def _folder_with_metadata(tmp_path: Path, clip: Path, names: list[str], encoding: str = "utf-8") -> Path:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / "inside.mp4").write_bytes(clip.read_bytes())
    (root / "metadata.csv").write_bytes(("file_name,label\n" + "".join(f"{n},x\n" for n in names)).encode(encoding))
    return root


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink_out", "symlinked_folder_out"])
def test_a_metadata_row_outside_the_folder_is_refused_before_anything_is_opened(
    tmp_path: Path, synthetic_clips: list[Path], escape: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(synthetic_clips[1].read_bytes())
    root = _folder_with_metadata(tmp_path, synthetic_clips[0], ["inside.mp4"])
    name = {
        "dotdot": "../outside/secret.mp4",
        "absolute": str(outside / "secret.mp4"),
        "symlink_out": "link.mp4",
        "symlinked_folder_out": "linked/secret.mp4",
    }[escape]
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    with (root / "metadata.csv").open("a") as f:
        f.write(f"{name},y\n")
    with pytest.raises(DataError) as err:
        open_source([SourceSpec(str(root))])
    message = str(err.value)
    assert "\n" not in message and "metadata.csv" in message and "row 3" in message and name in message
    assert "outside" in message


def test_a_symlink_out_of_a_folder_without_metadata_is_refused(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.mp4").write_bytes(synthetic_clips[0].read_bytes())
    (root / "b.mp4").symlink_to(synthetic_clips[1])
    with pytest.raises(DataError, match=r"b\.mp4.*outside"):
        open_source([SourceSpec(str(root))])


def test_a_symlink_that_stays_inside_the_folder_is_fine_for_training(
    tmp_path: Path, synthetic_clips: list[Path]
) -> None:
    root = _folder_with_metadata(tmp_path, synthetic_clips[0], [])
    (root / "store").mkdir()
    (root / "store" / "other.mp4").write_bytes(synthetic_clips[1].read_bytes())
    (root / "alias.mp4").symlink_to(root / "store" / "other.mp4")
    (root / "sub").mkdir()
    (root / "metadata.csv").write_text("file_name,label\ninside.mp4,x\nsub/../alias.mp4,y\n")
    rows = _listed([SourceSpec(str(root))])
    assert [r["key"] for r in rows] == ["inside.mp4", "alias.mp4"]
    (root / "metadata.csv").write_text("file_name,label\nalias.mp4,x\nstore/other.mp4,y\n")
    with pytest.raises(DataError, match="rows 2 and 3.*same file"):  # a link is no way to list a file twice
        open_source([SourceSpec(str(root))])


def test_a_metadata_csv_that_is_not_utf8_is_one_line_error(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    root = _folder_with_metadata(tmp_path, synthetic_clips[0], ["inside.mp4"])
    (root / "metadata.csv").write_bytes("file_name,label\ninside.mp4,pneumonía\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        open_source([SourceSpec(str(root))])
    assert "\n" not in str(err.value) and "metadata.csv" in str(err.value) and "UTF-8" in str(err.value)


def test_a_utf8_metadata_csv_with_a_byte_order_mark_reads(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    root = _folder_with_metadata(tmp_path, synthetic_clips[0], ["inside.mp4"], encoding="utf-8-sig")
    assert [r["label"] for r in _listed([SourceSpec(str(root))])] == ["x"]


def test_a_file_listed_twice_in_the_metadata_is_refused(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    root = _folder_with_metadata(tmp_path, synthetic_clips[0], ["inside.mp4", "./inside.mp4"])
    with pytest.raises(DataError) as err:
        open_source([SourceSpec(str(root))])
    message = str(err.value)
    assert "\n" not in message and "inside.mp4" in message and "rows 2 and 3" in message


# -- when nothing is left, say why (L12) ----------------------------------------------------------------------------


def _four_clips(tmp_path: Path, synthetic_clips: list[Path]) -> Path:
    root = tmp_path / "four"
    root.mkdir()
    for i in range(4):
        (root / f"clip{i}.mp4").write_bytes(synthetic_clips[i % 3].read_bytes())
    return root


def test_a_split_that_takes_nothing_is_returned_empty_for_the_caller_to_explain(
    tmp_path: Path, synthetic_clips: list[Path]
) -> None:
    root = _four_clips(tmp_path, synthetic_clips)
    src = open_source([SourceSpec(str(root))], split=lambda r: False)  # not "loosen the filters": none were given
    assert src.rows == [] and src.matched == 4 and src.dataset is None


def test_filters_that_match_nothing_are_named(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    root = _folder_with_metadata(tmp_path, synthetic_clips[0], ["inside.mp4"])
    with pytest.raises(DataError, match=r"no video left.*filters=\{'label': 'z'\}.*1 listed"):
        open_source([SourceSpec(str(root))], filters={"label": "z"})
