"""What an evaluation shows while it runs and leaves behind (issue 18): one log line per finished unit with its
scores, the confusion-matrix and per-fold plots (``--plots``), and the predicted masks as PNG (``--save-masks``).
Tiny runs on the synthetic task folders of conftest.py (never committed)."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from timm_uscl.cli import main as cli
from timm_uscl.training.evaluation import evaluate
from timm_uscl.training.evaluation import run as run_module
from timm_uscl.training.evaluation.plots import confusion_counts, fold_scores

SMOKE: dict[str, Any] = dict(budget="smoke", folds=[0, 1], pretrained=False, max_items=3, progress=False)


def test_every_finished_unit_is_logged_once_with_its_scores(
    synthetic_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timm_uscl.training.evaluation")
    evaluate("resnet18_uscl", tasks=["pocus", "busi_seg"], data_root=synthetic_root, **SMOKE)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("evaluation.units")]
    # pocus: 2 folds x 2 seeds fine-tuned + 2 folds probed; busi_seg: 2 folds x 2 seeds
    assert len(lines) == 10 and all(f"[{k}/10]" in line for k, line in enumerate(lines, 1))
    video = r"video accuracy \d+\.\d %, macro-F1 \d+\.\d % \(\d+\.\ds\)$"
    for fold in (0, 1):
        for seed in (0, 1):
            assert sum(bool(re.search(rf"^pocus finetune fold {fold} seed {seed} \[.*{video}", x)) for x in lines) == 1
            dice = rf"^busi_seg finetune fold {fold} seed {seed} \[\d+/10\]: Dice \d+\.\d %, IoU \d+\.\d %"
            assert sum(bool(re.search(dice, x)) for x in lines) == 1
        assert sum(bool(re.search(rf"^pocus linear fold {fold} \[.*{video}", x)) for x in lines) == 1


def test_a_unit_loaded_from_the_work_dir_is_logged_as_kept(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kwargs = dict(SMOKE, folds=[0], tasks=["busi"], protocol="linear", data_root=synthetic_root, work_dir=tmp_path)
    evaluate("resnet18_uscl", **kwargs)
    caplog.set_level(logging.INFO, logger="timm_uscl.training.evaluation")
    evaluate("resnet18_uscl", **kwargs)
    (line,) = [r.getMessage() for r in caplog.records if r.name.endswith("evaluation.units")]
    assert line.startswith("busi linear fold 0 [1/1]: image accuracy ") and line.endswith(f"(kept in {tmp_path})")


def _cli_smoke(root: Path, *extra: str) -> list[str]:
    return ["evaluate", "resnet18_uscl", "--random-init", "--data-root", str(root), "--budget", "smoke"] + [
        *("--folds", "0", "1", "--max-items", "3", "--no-progress", *extra)
    ]


def test_plots_are_written_per_task_as_valid_pngs_from_the_kept_predictions(
    synthetic_root: Path, tmp_path: Path
) -> None:
    out, plots = tmp_path / "eval.json", tmp_path / "plots"
    assert (
        cli(_cli_smoke(synthetic_root, "--tasks", "pocus", "busi_seg", "--out", str(out), "--plots", str(plots))) == 0
    )
    names = {"pocus_confusion.png", "pocus_folds.png", "busi_seg_folds.png"}  # segmentation has no classes
    assert {p.name for p in plots.iterdir()} == names
    for name in names:
        with Image.open(plots / name) as im:
            im.verify()
            assert im.format == "PNG"
    pocus = json.loads(out.read_text())["tasks"]["pocus"]
    counts = confusion_counts(pocus)
    for protocol, (level, m) in counts.items():  # every reported prediction of every fold x seed, once
        runs = pocus["protocols"][protocol]["folds"]
        assert level == "video" and m.sum() == sum(len(r["predictions"]["final"]["item"]) for r in runs)
        assert m.trace() == sum(r["metrics"]["video"]["accuracy"] * r["metrics"]["video"]["n"] for r in runs)
    assert len(counts) == 2 and len(fold_scores(pocus)["video accuracy"]["finetune"]) == 4  # 2 folds x 2 seeds


def test_plots_without_matplotlib_are_refused_before_anything_is_evaluated(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    loaded = []
    monkeypatch.setattr(run_module, "load_backbone", lambda *a, **k: loaded.append(a))
    assert cli(_cli_smoke(synthetic_root, "--tasks", "busi", "--plots", str(tmp_path / "plots"))) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--plots needs the matplotlib package: pip install matplotlib" in err
    assert not loaded and not (tmp_path / "plots").exists()
