"""A Hub dataset repo of plain video files (+ metadata.csv), like many public video datasets, streams per file."""

from __future__ import annotations

from timm_uscl.training.data import DataConfig, PairDataModule


def test_hub_videofolder_repo_streams_and_decodes(hub_video_repo):

    cfg = DataConfig(
        source="org/lus-videos",
        image_size=32,
        batch_size=2,
        num_workers=0,
        meta_fraction=0.2,
        meta_batch_size=2,
        meta_group_by="patient",
    )
    dm = PairDataModule(cfg)
    batches = list(dm.train_loader(0))
    keys = [k for b in batches for k in b.keys]
    assert len(keys) == len(set(keys)) >= 4 and all(k.endswith(".mp4") for k in keys)
    x1, x2 = dm.gpu_views(batches[0], "cpu")
    assert x1.shape == x2.shape == (2, 3, 32, 32)
    meta = next(dm.meta_iterator())
    assert not set(meta.keys) & set(keys)
    assert dm.stats.skipped == {}
