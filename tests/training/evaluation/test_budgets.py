"""Named evaluation budgets, repeated seeds and strict JSON (issue 15 item 4, issue 18 item 4)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from timm_uscl.cli import main as cli
from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation import evaluate
from timm_uscl.training.evaluation.config import BUDGETS, budget_config
from timm_uscl.training.evaluation.metrics import segmentation_metrics, strict_json, summarize
from timm_uscl.training.evaluation.run import evaluate_for_reproduction

TINY: dict[str, Any] = dict(folds=[0], pretrained=False, image_size=32, frames_per_video=2, epochs=1, progress=False)


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in JSON")

    return json.loads(text, parse_constant=refuse)


def test_the_reproduction_budget_runs_the_reference_pocus_protocol_at_64_px_with_three_seeds() -> None:
    cfg = budget_config("repro64")
    assert (cfg.image_size, cfg.frames_per_video, cfg.seeds, cfg.budget) == (64, 16, 3, "repro64")
    assert cfg.for_task("pocus").epochs == 30 and cfg.run_seeds == (0, 1, 2)
    assert budget_config("repro64", seeds=5, seed=2).run_seeds == (2, 3, 4, 5, 6)  # seeds: a default only
    assert set(dict(BUDGETS["repro64"].task_epochs)) >= {"pocus", "busi", "busi_seg"}


@pytest.mark.parametrize("setting", ["epochs", "image_size", "frames_per_video"])
def test_a_setting_the_budget_fixes_is_refused_when_given_too(setting: str) -> None:
    with pytest.raises(EvaluationError, match=f"--budget repro64 sets --{setting.replace('_', '-')}"):
        budget_config("repro64", **{setting: 3})


def test_the_command_line_refuses_budget_with_epochs_in_one_line(
    synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "resnet18_uscl", "--random-init", "--data-root", str(synthetic_root), "--budget", "smoke"]
    assert cli([*argv, "--epochs", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "drop --epochs or the budget" in err


def test_seeds_repeat_each_fine_tune_and_seed_zero_draws_what_a_single_seed_run_draws(synthetic_root: Path) -> None:
    kwargs = dict(TINY, tasks=["busi"], protocol="finetune", data_root=synthetic_root)
    two = evaluate("resnet18_uscl", seeds=2, **kwargs)["tasks"]["busi"]["protocols"]["finetune"]
    one = evaluate("resnet18_uscl", **kwargs)["tasks"]["busi"]["protocols"]["finetune"]
    assert two["seeds"] == [0, 1] and [(r["fold"], r["seed"]) for r in two["folds"]] == [(0, 0), (0, 1)]
    assert two["folds"][0] == one["folds"][0]
    probs = [np.array(r["predictions"]["final"]["prob"]) for r in two["folds"]]
    assert not np.allclose(probs[0], probs[1])  # another head init and augmentation stream


def test_undefined_segmentation_scores_are_null_never_nan() -> None:
    lesions = np.ones((2, 4, 4), dtype=bool)  # no empty mask: "empty masks kept empty" is undefined
    m = segmentation_metrics(lesions, lesions)
    assert m["empty_correct"] is None and m["dice"] == 1.0
    empty = segmentation_metrics(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool))
    assert empty["dice_lesion"] is None and empty["iou_lesion"] is None
    summary = summarize([{"metrics": m}, {"metrics": empty}])
    assert summary["metrics"]["empty_correct"] == {"mean": 1.0, "std": 0.0}
    assert summarize([{"x": None}])["x"] == {"mean": None, "std": 0.0}
    assert _strict(strict_json({"a": [math.nan, math.inf, 1.5]})) == {"a": [None, None, 1.5]}


def test_evaluation_for_the_reproduction_writes_strict_json_and_markdown(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval_random.json"
    results = evaluate_for_reproduction(
        "resnet18_uscl", out, budget="smoke", data_root=synthetic_root, random_init=True, max_items=3
    )
    written = _strict(out.read_text())
    assert written["config"]["budget"] == "smoke" and written["config"]["run_seeds"] == [0, 1]
    assert list(written["tasks"]) == ["pocus", "busi", "busi_seg"] == list(results["tasks"])
    assert written["tasks"]["busi"]["protocols"].keys() == {"finetune", "linear"}
    assert "seeds [0, 1]" in out.with_suffix(".md").read_text()
    with pytest.raises(EvaluationError, match="folder does not exist"):
        evaluate_for_reproduction("resnet18_uscl", tmp_path / "missing" / "e.json", budget="smoke", random_init=True)


def test_every_json_the_evaluate_command_writes_is_strict_when_a_fold_has_no_empty_mask(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """Two items per fold are a benign and a malignant image (round-robin over labels): no normal, empty mask,
    so "empty masks kept empty" is undefined in every fold; it used to be written as NaN."""
    argv = ["evaluate", "resnet18_uscl", "--random-init", "--data-root", str(synthetic_root), "--tasks", "busi_seg"]
    argv += ["--folds", "0", "1", "--image-size", "32", "--epochs", "1", "--max-items", "2", "--no-progress"]
    assert cli([*argv, "--out", str(tmp_path / "eval.json"), "--markdown", str(tmp_path / "eval.md")]) == 0
    written = sorted(tmp_path.glob("*.json"))
    assert written == [tmp_path / "eval.json"]
    results = _strict(written[0].read_text())
    pres = results["tasks"]["busi_seg"]["protocols"]["finetune"]
    assert all(run["metrics"]["empty_correct"] is None for run in pres["folds"])
    assert pres["summary"]["metrics"]["empty_correct"]["mean"] is None
