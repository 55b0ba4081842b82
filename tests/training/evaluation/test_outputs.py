"""What an evaluation shows while it runs and leaves behind (issue 18): one log line per finished unit with its
scores, the confusion-matrix and per-fold plots (``--plots``), and the predicted masks as PNG (``--save-masks``).
Tiny runs on the synthetic task folders of conftest.py (never committed)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest

from timm_uscl.training.evaluation import evaluate

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
