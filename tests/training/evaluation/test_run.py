"""`timm-uscl evaluate` on the real shared data, shrunk: 32 px, 2 folds, 2 frames/video, 1 epoch, 4 items/fold."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from timm_uscl.training.evaluation import evaluate
from timm_uscl.training.evaluation.backbone import last_block, load_backbone
from timm_uscl.training.evaluation.fitting import run_epochs
from timm_uscl.training.evaluation.metrics import dice_iou, results_to_markdown, segmentation_metrics, video_probs
from timm_uscl.training.evaluation.protocols import _fold_result, build_unet
from timm_uscl.training.evaluation.tasks import (
    TASKS,
    EvaluationError,
    Item,
    TaskData,
    fold_split,
    inner_split,
    load_items,
    subsample,
)

MODEL = "resnet18_uscl"  # the plugin's arch, random init: exercises the registry (and smp's tu- encoder) offline
TINY: dict[str, Any] = dict(
    folds=[0, 1], pretrained=False, image_size=32, frames_per_video=2, epochs=1, max_items=4, progress=False, seed=0
)


@pytest.fixture(scope="module")
def results(data_root: Path) -> dict[str, Any]:
    return evaluate(MODEL, tasks=list(TASKS), data_root=data_root, **TINY)


def _stub(spec_name: str, items: list[Item]) -> TaskData:
    """Fold logic needs only items and the row -> item map, not decoded pixels."""
    n = len(items)
    labels = torch.tensor([it.label for it in items], dtype=torch.int64)
    return TaskData(TASKS[spec_name], items, torch.empty(n, 0), labels, torch.arange(n))


def _in_unit(x: float) -> bool:
    return 0.0 <= x <= 1.0


@pytest.mark.parametrize("task", list(TASKS))
def test_task_runs_end_to_end_with_well_formed_metrics(results: dict[str, Any], task: str) -> None:
    res = results["tasks"][task]
    expected = ["finetune"] if res["kind"] == "segmentation" else ["finetune", "linear"]
    assert list(res["protocols"]) == expected
    for proto, pres in res["protocols"].items():
        assert [f["fold"] for f in pres["folds"]] == [0, 1]
        for fold in pres["folds"]:
            m = fold["metrics"]
            if res["kind"] == "segmentation":
                assert all(_in_unit(m[k]) for k in ("dice", "iou", "dice_lesion", "iou_lesion"))
                assert m["n"] == fold["n_test"] and m["iou"] <= m["dice"] + 1e-9
                continue
            levels = ["frame", "video"] if res["kind"] == "video" else ["image"]
            assert list(m) == levels
            for level in levels:
                assert _in_unit(m[level]["accuracy"]) and _in_unit(m[level]["macro_f1"])
                assert set(m[level]["precision"]) == set(m[level]["recall"]) == set(res["classes"])
            assert m[levels[0]]["n"] == fold["n_test"]
            if res["kind"] == "video":
                assert m["video"]["n"] < m["frame"]["n"] <= 2 * m["video"]["n"]
        if proto == "finetune":
            assert all(f["epoch"] == TINY["epochs"] and f["optimistic"]["epoch"] == 1 for f in pres["folds"])
        ref = pres["reference_style"]  # pooled: every test row of the evaluated folds, once
        assert ref["n"] == sum(f["n_test"] for f in pres["folds"])
        assert _in_unit(ref["dice"] if res["kind"] == "segmentation" else ref["accuracy"])
        stat = pres["summary"]["metrics"][
            "dice" if res["kind"] == "segmentation" else ("frame" if res["kind"] == "video" else "image")
        ]
        stat = stat if "mean" in stat else stat["accuracy"]
        assert _in_unit(stat["mean"]) and stat["std"] >= 0


def test_markdown_lists_every_task_and_protocol(results: dict[str, Any]) -> None:
    md = results_to_markdown(results)
    for row in (
        "| pocus | fine-tune last block | video |",
        "| covid_blues | linear probe | frame |",
        "| busi | fine-tune all | image |",
        "| busi_seg | U-Net fine-tune |",
    ):
        assert row in md
    assert "optimistic" in md and "±" in md


def test_same_seed_same_results(results: dict[str, Any], data_root: Path) -> None:
    again = evaluate(MODEL, tasks=["pocus"], data_root=data_root, **TINY)
    assert again["tasks"]["pocus"] == results["tasks"]["pocus"]


def test_inner_validation_picks_an_epoch_from_a_grouped_split(data_root: Path) -> None:
    res = evaluate(
        MODEL, tasks=["pocus"], protocol="finetune", data_root=data_root, select="val", **dict(TINY, epochs=2)
    )
    for fold in res["tasks"]["pocus"]["protocols"]["finetune"]["folds"]:
        assert fold["n_val"] > 0 and fold["epoch"] in (1, 2)
        assert fold["n_train"] + fold["n_val"] == 4 * 4 * TINY["frames_per_video"]  # 4 training folds x 4 videos


@pytest.mark.parametrize("task", list(TASKS))
def test_folds_never_share_a_patient_or_cluster(data_root: Path, task: str) -> None:
    items = load_items(TASKS[task], data_root)
    data = _stub(task, items)
    groups = data.group
    seen = []
    for f in range(5):
        train, test = fold_split(data, f)
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(items)
        fit, val = inner_split(data, train, 0.2, seed=f)
        assert not set(groups[fit]) & set(groups[val]) and len(fit) + len(val) == len(train)
        seen += test.tolist()
    assert sorted(seen) == list(range(len(items)))
    if task == "pocus":
        assert len(items) == 112  # convex, 3 classes, fold set


def test_leaking_fold_is_refused() -> None:
    items = [Item(Path(f"v{i}.mp4"), i % 3, "g1" if i < 2 else f"g{i}", i % 2) for i in range(6)]
    with pytest.raises(EvaluationError, match="g1"):
        fold_split(_stub("pocus", items), 0)


def test_subsample_keeps_every_class_per_fold(data_root: Path) -> None:
    items = subsample(load_items(TASKS["pocus"], data_root), 3, seed=0)
    for f in range(5):
        assert sorted(it.label for it in items if it.fold == f) == [0, 1, 2]


def test_video_prediction_is_the_mean_of_its_frames_softmax() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6]])
    video = np.array([7, 7, 7, 3, 3])
    y = np.array([1, 1, 1, 0, 0])
    vp, vy = video_probs(probs, video, y)
    np.testing.assert_allclose(vp, [[0.5, 0.5], [1.4 / 3, 1.6 / 3]])  # video 3 first (sorted ids)
    assert vy.tolist() == [0, 1]
    assert vp.argmax(1).tolist() == [0, 1]  # video 7 is right although its first frame says class 0


def test_dice_iou_score_empty_masks_explicitly() -> None:
    target = np.zeros((4, 2, 2), bool)
    target[2:, 0, 0] = True
    pred = np.zeros((4, 2, 2), bool)
    pred[1, 1, 1] = pred[2, 0, 0] = pred[3, 0, 1] = True
    dice, iou = dice_iou(pred, target)
    assert dice.tolist() == [1.0, 0.0, 1.0, 0.0]  # empty/empty, false positive on empty, perfect, miss
    assert iou.tolist() == [1.0, 0.0, 1.0, 0.0]
    m = segmentation_metrics(pred, target)
    assert m["dice_lesion"] == 0.5 and m["n_empty"] == 2 and m["empty_correct"] == 0.5


def test_reported_epoch_ignores_a_test_fold_that_peaks_early() -> None:
    test_acc = iter([0.9, 0.5, 0.4, 0.3])  # best on the test fold at epoch 1, then degrading
    trace = run_epochs(4, lambda _: None, lambda: next(test_acc), progress=False)
    assert trace.chosen == 3 and trace.val_scores is None
    result = _fold_result(0, 10, 0, 5, trace, lambda a: {"acc": a}, lambda m: m["acc"])
    assert result["epoch"] == 4 and result["metrics"] == {"acc": 0.3}
    assert result["optimistic"] == {"epoch": 1, "acc": 0.9}

    for test in ([0.9, 0.5, 0.4, 0.3], [0.0, 0.0, 0.0, 1.0]):  # whatever the test fold says
        test_it, val_it = iter(test), iter([0.1, 0.6, 0.2, 0.6])
        trace = run_epochs(4, lambda _: None, test_it.__next__, eval_val=val_it.__next__, progress=False)
        assert trace.chosen == 1  # the first best validation epoch


def test_last_block_is_resnets_layer4_last() -> None:
    model = load_backbone(MODEL, pretrained=False).model
    assert last_block(model) is model.layer4[-1]


def test_checkpoint_needs_arch_and_loads_into_every_protocol(tmp_path: Path, data_root: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)  # the same random weights evaluate() draws for MODEL at seed 0
    path = tmp_path / "backbone.safetensors"
    save_file(timm.create_model(MODEL, num_classes=0).state_dict(), str(path))
    with pytest.raises(EvaluationError, match="--arch"):
        load_backbone(str(path))

    backbone = load_backbone(str(path), arch=MODEL)
    assert backbone.mean == (0.18,) * 3
    encoder = build_unet(backbone).get_submodule("encoder.model").state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in backbone.model.state_dict().items() if k in encoder)

    kwargs = dict(TINY, tasks=["busi"], protocol="linear", data_root=data_root)
    from_file = evaluate(str(path), arch=MODEL, **dict(kwargs, pretrained=True))
    by_name = evaluate(MODEL, init="timm", **kwargs)  # the file holds timm's init, drawn at seed 0
    assert from_file["tasks"] == by_name["tasks"]


def test_local_dir_export_loads_with_its_preprocessing(tmp_path: Path) -> None:
    import timm

    from timm_uscl import export

    torch.manual_seed(0)
    model = timm.create_model(MODEL, num_classes=0)
    backbone = load_backbone(f"local-dir:{export(model, tmp_path / 'export', 'resnet18_uscl.metauscl_us4_64')}")
    assert backbone.mean == (0.18,) * 3
    encoder = build_unet(backbone).get_submodule("encoder.model").state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in model.state_dict().items() if k in encoder)


def test_missing_data_root_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from timm_uscl.cli import main

    missing = tmp_path / "nowhere"
    assert main(["evaluate", MODEL, "--random-init", "--data-root", str(missing), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(missing / "pocus" / "metadata.csv") in err
    assert "--data-root" in err and "TIMM_USCL_DATA" in err


def test_unknown_task_is_one_clear_line(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from timm_uscl.cli import main

    assert main(["evaluate", MODEL, "--tasks", "udiat", "--data-root", str(data_root)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "udiat" in err and "pocus" in err


def test_linear_only_is_refused_for_segmentation(data_root: Path) -> None:
    with pytest.raises(EvaluationError, match="busi_seg"):
        evaluate(MODEL, tasks=["busi_seg"], protocol="linear", data_root=data_root, **TINY)
