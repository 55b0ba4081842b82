"""Evaluation items that are also in the pretraining data are warned about, with how many (issue 18.7)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from timm_uscl.cli import main as cli
from timm_uscl.record import RECORD_KEY
from timm_uscl.training.config import load_config
from timm_uscl.training.engine import build_online_evaluator
from timm_uscl.training.evaluation import online
from timm_uscl.training.evaluation.leakage import PretrainFiles, find_leaks
from timm_uscl.training.evaluation.tasks import TASKS, load_items


class Decoded(Exception):
    """Raised instead of decoding: the leak check runs before, and these tests need nothing after it."""


def _no_decoding(*args: object, **kwargs: object) -> None:
    raise Decoded


def test_online_evaluation_on_the_readme_fixtures_warns_how_many_pocus_items_were_pretrained_on(
    data_root: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's smoke run pretrains on fixtures/pocus_videos; the POCUS task holds re-encoded copies of them
    (its metadata.csv's original_path names each source file), and ``--online-eval pocus`` said nothing."""
    config = load_config(
        overrides={
            "source": str(fixtures_dir / "pocus_videos"),
            "online_eval": "pocus",
            "online_data_root": str(data_root),
        }
    )
    monkeypatch.setattr(online, "load_task_cached", _no_decoding)
    with caplog.at_level(logging.WARNING), pytest.raises(Decoded):
        build_online_evaluator(config)
    fixture_names = {p.name for p in (fixtures_dir / "pocus_videos").iterdir()}
    items = {str(it.path.resolve()) for it in load_items(TASKS["pocus"], data_root)}
    with (data_root / "pocus" / "metadata.csv").open(newline="") as f:
        expected = {
            r["file_name"]
            for r in csv.DictReader(f)
            if Path(r["original_path"]).name in fixture_names
            and str((data_root / "pocus" / r["file_name"]).resolve()) in items
        }
    assert expected  # the fixtures are POCUS videos of the evaluation set
    warned = [r.getMessage() for r in caplog.records if "pretraining data" in r.getMessage()]
    assert len(warned) == 1 and f"online evaluation: {len(expected)} of {len(items)} pocus items" in warned[0]


def test_a_byte_identical_copy_or_the_same_file_is_found_and_unseen_data_is_not(
    data_root: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    """Compared by content (a copy under another name) and by resolved path (a link), not by name."""
    spec = TASKS["covid_blues"]
    items = load_items(spec, data_root)
    base = data_root / spec.folder
    pretrain = tmp_path / "pretrain"
    pretrain.mkdir()
    shutil.copy(fixtures_dir / "covid_blues" / "patient_1_L1.mp4", pretrain / "renamed.mp4")
    (pretrain / "link.mp4").symlink_to(base / "lus_videos" / "patient_2_L1.mp4")
    leaks = {leak.item: leak.how for leak in find_leaks(items, base, PretrainFiles.of([pretrain]))}
    assert leaks == {"lus_videos/patient_1_L1.mp4": "same content", "lus_videos/patient_2_L1.mp4": "same file"}
    assert find_leaks(items, base, PretrainFiles.of([fixtures_dir / "pocus_videos"])) == []


def test_evaluate_warns_about_items_in_the_data_an_exports_record_names(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Offline, ``--pretrain-data`` names the folders; without it, a local export's record (``run`` fact ``data``)
    does."""
    from timm_uscl.training.evaluation import run

    export = tmp_path / "export"
    export.mkdir()
    pocus_videos = str(synthetic_root / "pocus" / "videos")
    record = {"run": [["data", f"{pocus_videos}, some/hub-dataset"]]}
    (export / "config.json").write_text(json.dumps({RECORD_KEY: record}))
    monkeypatch.setattr(run, "load_backbone", _no_decoding)
    argv = ["evaluate", f"local-dir:{export}", "--data-root", str(synthetic_root), "--tasks", "pocus", "busi"]
    for extra in ([], ["--pretrain-data", pocus_videos]):
        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(Decoded):
            cli([*argv, *extra])
        warned = [r.getMessage() for r in caplog.records if "pretraining data" in r.getMessage()]
        assert len(warned) == 1 and "evaluate: 15 of 15 pocus items" in warned[0] and "15 same file" in warned[0]
