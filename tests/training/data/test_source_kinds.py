"""The table of source kinds: each source is opened by the first kind that takes it, and the message listing the
accepted layouts comes from the same table."""

from __future__ import annotations

from pathlib import Path

from timm_uscl.training.data.sources import KINDS, LAYOUTS, SourceSpec
from timm_uscl.training.data.sources.open import kind_of


def test_each_source_is_opened_by_the_first_kind_that_takes_it(tmp_path: Path) -> None:
    assert kind_of(SourceSpec(str(tmp_path))).name == "video folder"
    assert kind_of(SourceSpec(str(tmp_path), group_column="video_id")).name == "image folder"
    assert kind_of(SourceSpec(str(tmp_path / "*.parquet"))).name == "parquet"
    assert kind_of(SourceSpec(str(tmp_path / "train-00000.parquet"))).name == "parquet"
    assert kind_of(SourceSpec("someone/ultrasound-videos")).name == "hub"


def test_the_accepted_layouts_name_every_kind_and_each_column_layout_once() -> None:
    assert all(kind.where in LAYOUTS and kind.holds in LAYOUTS for kind in KINDS)
    assert LAYOUTS.count("list-of-images column") == 1  # parquet files and a Hub dataset hold the same columns
    assert LAYOUTS.startswith("accepted layouts: a folder of videos or of frame folders")
