"""Paired differences between evaluation results (``timm-uscl compare``): statistics checked against a hand-computed
example, refusals of results that cannot be paired, and the command end to end on tiny evaluations."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import f1_score

from timm_uscl.cli import main as cli
from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation.compare import Method, compare, comparison_markdown, load_method, t_quantile

Y = [0, 1, 0, 1]  # four images, two classes; fold 0 holds images 0-1, fold 1 images 2-3
# predictions per (seed, fold): method A is right 7 times in 8, B always says class 0
PRED_A = {(0, 0): [0, 1], (0, 1): [0, 0], (1, 0): [0, 1], (1, 1): [0, 1]}
PRED_B = {key: [0, 0] for key in PRED_A}


def _result(preds: dict[tuple[int, int], list[int]], *, pretrained: bool = True, commit: str = "abc") -> dict:
    """A minimal evaluation result of one image task in the JSON layout of :mod:`.compare`."""
    runs = []
    for (seed, fold), pred in sorted(preds.items()):
        items = [2 * fold, 2 * fold + 1]
        p = {"level": "image", "item": items, "y": [Y[i] for i in items], "pred": pred}
        runs.append({"fold": fold, "seed": seed, "predictions": {"final": p, "optimistic": p}})
    return {
        "pretrained": pretrained,
        "config": {
            "folds": [0, 1],
            "run_seeds": [0, 1],
            "seed": 0,
            "seeds": 2,
            "image_size": 64,
            "select": "final",
            "frames_per_video": 16,
            "epochs": 5,
            "budget": None,
            "progress": False,
            "device": "cpu",
        },
        "environment": {"commit": commit},
        "tasks": {
            "busi": {
                "kind": "image",
                "classes": ["a", "b"],
                "items": ["a.png", "b.png", "c.png", "d.png"],
                "protocols": {"finetune": {"folds": runs}},
            }
        },
    }


def _methods(a: dict, b: dict) -> list[Method]:
    return [Method("meta_uscl", "eval_meta_uscl.json", a), Method("random", "eval_random.json", b)]


def _difference(comparison, metric: str, scoring: str = "ours"):
    (d,) = [d for d in comparison.differences if d.metric == metric and d.scoring == scoring]
    return d


def test_t_quantile_matches_student_tables() -> None:
    for df, table in ((1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (14, 2.1448), (30, 2.0423)):
        assert t_quantile(0.95, df) == pytest.approx(table, abs=1e-4)


def test_paired_differences_match_a_hand_computed_example() -> None:
    c = compare(_methods(_result(PRED_A), _result(PRED_B, pretrained=False)), n_boot=500)
    acc = _difference(c, "accuracy")
    # per-run accuracy A 1, .5, 1, 1 and B .5 each: differences .5, 0, .5, .5 -> mean .375, sd .25, t(3) 3.1824
    assert acc.t.n == 4 and acc.t.estimate == pytest.approx(0.375)
    half = 3.18245 * 0.25 / 2
    assert acc.t.low == pytest.approx(0.375 - half, abs=1e-4) and acc.t.high == pytest.approx(0.375 + half, abs=1e-4)
    assert acc.bootstrap.estimate == pytest.approx(7 / 8 - 4 / 8) and acc.bootstrap.n == 4  # pooled over runs
    # pooled confusion A [[4, 0], [1, 3]], B [[4, 0], [4, 0]]: macro-F1 (8/9 + 6/7) / 2 and (2/3 + 0) / 2
    f1 = _difference(c, "macro_f1")
    assert f1.bootstrap.estimate == pytest.approx((8 / 9 + 6 / 7) / 2 - 1 / 3)
    a_all = [p for k in sorted(PRED_A) for p in PRED_A[k]]
    y_all = [Y[i] for k in sorted(PRED_A) for i in (2 * k[1], 2 * k[1] + 1)]
    assert f1.bootstrap.estimate + 1 / 3 == pytest.approx(f1_score(y_all, a_all, average="macro"))
    values = {(v.method, v.metric): v for v in c.values if v.scoring == "ours"}
    assert values[("meta_uscl", "accuracy")].mean == pytest.approx(0.875)
    assert values[("random", "accuracy")].pooled == pytest.approx(0.5)


def test_bootstrap_resamples_items_with_the_same_draws_for_both_methods() -> None:
    c = compare(_methods(_result(PRED_A), _result(PRED_B, pretrained=False)), n_boot=400, seed=3)
    boot = _difference(c, "accuracy").bootstrap
    # the same statistic by hand: each resample weights the four images; A's right answers per image are
    # [2, 2, 2, 1] of 2 runs each, B's [2, 0, 2, 0]
    weights = np.random.default_rng(3).multinomial(4, np.full(4, 0.25), size=400)
    diff = (weights @ [2, 2, 2, 1] - weights @ [2, 0, 2, 0]) / (2 * weights.sum(1))
    assert (boot.low, boot.high) == pytest.approx(tuple(np.quantile(diff, [0.025, 0.975])))
    same = compare(_methods(_result(PRED_A), _result(PRED_A, pretrained=False)), n_boot=200)
    assert all(d.bootstrap.low == d.bootstrap.high == 0 and d.t.low == d.t.high == 0 for d in same.differences)


def test_markdown_bolds_intervals_that_exclude_zero_and_labels_the_reference_scoring() -> None:
    right = {k: [0, 1] for k in PRED_A}
    md = comparison_markdown(compare(_methods(_result(right), _result(PRED_B, pretrained=False)), n_boot=200))
    assert "| Meta-USCL − random init | busi | finetune | accuracy | ours (image) | **+50.0 [+50.0, +50.0]** |" in md
    assert "optimistic" in md and "reference (image)" in md


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["config"].update(image_size=224), "different image_size"),
        (lambda r: r["config"].update(run_seeds=[0, 1, 2]), "different run_seeds"),
        (lambda r: r["config"].update(budget="repro64"), "different budget"),
        (lambda r: r["tasks"]["busi"]["items"].reverse(), "different data"),
        (lambda r: r["tasks"]["busi"]["protocols"]["finetune"]["folds"].pop(), "different folds or seeds"),
        (
            lambda r: r["tasks"]["busi"]["protocols"].update(linear=r["tasks"]["busi"]["protocols"]["finetune"]),
            "not evaluated with 'linear' in both",
        ),
        (
            lambda r: r["tasks"]["busi"]["protocols"]["finetune"]["folds"][0]["predictions"]["final"].update(
                item=[1, 0]
            ),
            "tested different items",
        ),
        (lambda r: r["tasks"]["busi"]["protocols"]["finetune"]["folds"][0].pop("predictions"), "evaluate it again"),
        (lambda r: r["environment"].update(commit="def"), "different code commits"),
    ],
)
def test_results_that_cannot_be_paired_are_refused_in_one_line(edit, message: str) -> None:
    other = copy.deepcopy(_result(PRED_B, pretrained=False))
    edit(other)
    with pytest.raises(EvaluationError, match=message) as err:
        compare(_methods(_result(PRED_A), other), n_boot=10)
    assert "\n" not in str(err.value)


def test_mixed_commits_compare_only_when_allowed_and_are_flagged() -> None:
    c = compare(_methods(_result(PRED_A), _result(PRED_B, commit="def-dirty")), n_boot=10, allow_mixed_commits=True)
    md = comparison_markdown(c)
    assert "**Different code commits**" in md and "modified work tree" in md


def test_a_json_with_nan_is_refused_as_not_strict(tmp_path: Path) -> None:
    path = tmp_path / "eval_x.json"
    path.write_text('{"tasks": {}, "config": {"x": NaN}}')
    with pytest.raises(EvaluationError, match="not a strict JSON"):
        load_method(path)


def _strict(path: Path) -> Any:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_compare_command_pairs_tiny_evaluations_and_every_written_json_is_strict(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = ["--data-root", str(synthetic_root), "--folds", "0", "1", "--image-size", "32", "--frames-per-video", "2"]
    tiny += ["--epochs", "1", "--max-items", "3", "--no-progress", "--seeds", "2", "--random-init"]
    for name, init, tasks in (("random", "torchvision", "pocus busi_seg"), ("timm_init", "timm", "pocus busi_seg")):
        argv = ["evaluate", "resnet18_uscl", "--init", init, "--tasks", *tasks.split(), *tiny]
        assert cli([*argv, "--out", str(tmp_path / f"eval_{name}.json")]) == 0
    written = sorted(tmp_path.glob("*.json"))
    results = [_strict(p) for p in written]  # the evaluation's only JSON output, parsed strictly
    seg = results[0]["tasks"]["busi_seg"]["protocols"]["finetune"]
    assert [(r["fold"], r["seed"]) for r in seg["folds"]] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    pocus = results[0]["tasks"]["pocus"]
    final = pocus["protocols"]["finetune"]["folds"][0]["predictions"]["final"]
    assert final["level"] == "video" and all(pocus["items"][i].startswith("videos/") for i in final["item"])
    assert pocus["protocols"]["linear"]["seeds"] is None and pocus["protocols"]["finetune"]["seeds"] == [0, 1]
    capsys.readouterr()
    md_path = tmp_path / "compare.md"
    assert (
        cli(["compare", *map(str, written), "--baseline", "random", "--bootstrap", "50", "--markdown", str(md_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert out == md_path.read_text()
    assert "| timm_init − random init | pocus | finetune | accuracy | ours (video) |" in out
    assert "| timm_init − random init | pocus | linear | accuracy | reference (frame) |" in out
    assert "| timm_init − random init | busi_seg | finetune | dice | reference (image) |" in out


def test_compare_without_a_baseline_among_two_random_inits_asks_for_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        (tmp_path / f"eval_{name}.json").write_text(json.dumps(_result(PRED_A, pretrained=False)))
    assert cli(["compare", str(tmp_path / "eval_a.json"), str(tmp_path / "eval_b.json")]) == 1
    assert "--baseline NAME" in capsys.readouterr().err


def test_the_compare_command_loads_no_heavy_module_until_it_runs() -> None:
    """The plugin's own command line builds every parser; the statistics load only when ``compare`` runs."""
    code = (
        "import sys; from timm_uscl.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith(('sklearn', 'timm_uscl.training.evaluation.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['timm_uscl.training.evaluation.config']"
