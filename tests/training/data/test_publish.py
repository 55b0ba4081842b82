"""Publishing a folder of videos as a Hub dataset: shards, card, push, and a streamed round trip."""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("torchcodec")


@pytest.fixture
def corpus(tmp_path: Path, synthetic_clips: list[Path]) -> Path:
    root = tmp_path / "corpus"
    (root / "clips").mkdir(parents=True)
    with (root / "metadata.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "source", "licence", "fold"])
        for i, clip in enumerate(synthetic_clips):
            shutil.copy(clip, root / "clips" / clip.name)
            w.writerow([f"clips/{clip.name}", "synth_a" if i else "synth_b", "CC-BY-4.0" if i else "CC-BY-NC-4.0", i])
    return root


def test_build_shards_and_card(corpus: Path, tmp_path: Path) -> None:
    from timm_uscl.training.data.publish import build_shards, render_dataset_card

    shards, rows = build_shards(corpus, tmp_path / "out", max_videos_per_shard=2)
    assert [p.name for p in shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    card = render_dataset_card(rows, repo_id="org/synth", citation="@article{x}", num_shards=len(shards))
    assert "license: other" in card and "| CC-BY-NC-4.0 | 1 |" in card and "| clip1.mp4 | CC-BY-4.0 |" in card
    assert "@article{x}" in card and "path: data/train-*.parquet" in card


def test_publish_round_trip_through_pipeline(corpus: Path, hub) -> None:
    from datasets import load_dataset
    from huggingface_hub import HfApi

    from timm_uscl.training.cli.publish import register
    from timm_uscl.training.data import DataConfig, PairDataModule

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["publish-dataset", str(corpus), "stub-user/synth-us", "--max-videos-per-shard", "1"])
    assert args.func(args) == 0

    files = hub.files("stub-user/synth-us", repo_type="dataset")
    assert "README.md" in files and sum(f.endswith(".parquet") for f in files) == 3
    assert HfApi().repo_info("stub-user/synth-us", repo_type="dataset").id == "stub-user/synth-us"

    ds = load_dataset("stub-user/synth-us", split="train", streaming=True)
    assert ds.num_shards == 3
    ex = next(iter(ds))
    assert ex["video"].metadata.num_frames == 24 and {"source", "licence", "fold"} <= set(ex)

    dm = PairDataModule(
        DataConfig(source="stub-user/synth-us", batch_size=2, num_workers=0, meta_fraction=0.0, image_size=32)
    )
    batches = list(dm.train_loader(0))
    assert len(batches) == 1 and batches[0].frames.shape == (2, 2, 1, 32, 32)
    assert set(batches[0].sources) <= {"synth_a", "synth_b"} and dm.stats.decoded == 3
    x1, x2 = dm.gpu_views(batches[0], "cpu")
    assert x1.shape == x2.shape == (2, 3, 32, 32)
