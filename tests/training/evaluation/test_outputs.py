"""What an evaluation shows while it runs and leaves behind (issue 18): one log line per finished unit with its
scores, the confusion-matrix and per-fold plots (``--plots``), and the predicted masks as PNG (``--save-masks``).
Tiny runs on the synthetic task folders of conftest.py (never committed)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from timm_uscl.cli import main as cli
from timm_uscl.errors import USCLError
from timm_uscl.training.evaluation import evaluate
from timm_uscl.training.evaluation import run as run_module
from timm_uscl.training.evaluation.plots import confusion_counts, fold_scores

SMOKE: dict[str, Any] = dict(budget="smoke", folds=[0, 1], pretrained=False, max_items=3, progress=False)
TINY: dict[str, Any] = dict(image_size=32, epochs=1, progress=False, seed=0)


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


def _seg_dir(folder: Path, write_png: Callable[..., Path], write_csv: Callable[..., Path]) -> Path:
    """Eight speckle images of two sizes in two folds, each with a rectangle mask; the last one is a JPEG."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        h, w = (40, 48) if i % 4 < 2 else (36, 52)
        mask = np.zeros((h, w), np.uint8)
        mask[5 + i : 25 + i, 8:30] = 255
        image = np.clip(rng.rayleigh(0.3, (h, w)) * 60 + 20 + 80 * (mask > 0), 0, 255).astype(np.uint8)
        suffix = ".jpg" if i == 7 else ".png"
        write_png(folder / "images" / f"im{i}{suffix}", image)
        write_png(folder / "masks" / f"im{i}.png", mask)
        rows.append([f"images/im{i}{suffix}", f"masks/im{i}.png", f"p{i}", i % 2])
    return write_csv(folder / "metadata.csv", ["file_name", "mask_file_name", "group", "fold"], rows).parent


def _masks(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predicted_masks_are_saved_as_0_255_pngs_at_each_images_size_per_fold_and_seed(
    tmp_path: Path, write_png: Callable[..., Path], write_csv: Callable[..., Path]
) -> None:
    folder = _seg_dir(tmp_path / "seg", write_png, write_csv)
    out = tmp_path / "masks"
    evaluate("resnet18_uscl", task_dir=folder, pretrained=False, folds=[0, 1], seeds=2, save_masks=out, **TINY)
    assert sorted(p.name for p in (out / "seg").iterdir()) == [f"fold{f}_seed{s}" for f in (0, 1) for s in (0, 1)]
    for fold in (0, 1):
        unit = out / "seg" / f"fold{fold}_seed1"
        assert sorted(_masks(unit)) == [f"images/im{i}.png" for i in range(fold, 8, 2)]  # the JPEG's as .png
        for i in range(fold, 8, 2):
            with (
                Image.open(unit / "images" / f"im{i}.png") as m,
                Image.open(next(folder.glob(f"images/im{i}.*"))) as im,
            ):
                assert m.format == "PNG" and m.mode == "L" and m.size == im.size
                assert set(np.unique(np.asarray(m)).tolist()) <= {0, 255}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_masks_folder_that_is_not_empty_or_has_no_segmentation_task_is_refused_before_anything_runs(
    tmp_path: Path,
    synthetic_root: Path,
    write_png: Callable[..., Path],
    write_csv: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = _seg_dir(tmp_path / "seg", write_png, write_csv)
    monkeypatch.setattr(run_module, "load_backbone", lambda *a, **k: pytest.fail("a backbone was loaded"))
    kept = tmp_path / "masks"
    (kept / "seg" / "fold0_seed0").mkdir(parents=True)
    (kept / "seg" / "fold0_seed0" / "hc_measured.png").write_bytes(b"the user's")
    with pytest.raises(USCLError, match=r"--save-masks .*masks is not empty \(holds seg\): it is never overwritten"):
        evaluate("resnet18_uscl", task_dir=folder, pretrained=False, save_masks=kept, **TINY)
    assert (kept / "seg" / "fold0_seed0" / "hc_measured.png").read_bytes() == b"the user's"
    with pytest.raises(USCLError, match=r"--save-masks: no segmentation task is evaluated \(tasks: busi\)"):
        evaluate("resnet18_uscl", tasks=["busi"], data_root=synthetic_root, save_masks=tmp_path / "new", **SMOKE)
    write_png(folder / "images" / "im7.png", np.zeros((8, 8), np.uint8))  # im7.jpg's mask name, taken
    with open(folder / "metadata.csv", "a") as f:
        f.write("images/im7.png,masks/im7.png,p7b,1\n")
    with pytest.raises(USCLError, match=r"im7\.jpg and .*im7\.png .* would both be saved as images/im7\.png"):
        evaluate("resnet18_uscl", task_dir=folder, pretrained=False, save_masks=tmp_path / "new", **TINY)


def test_a_resumed_evaluation_saves_the_masks_of_units_it_kept_without_them(
    tmp_path: Path,
    write_png: Callable[..., Path],
    write_csv: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder, work = _seg_dir(tmp_path / "seg", write_png, write_csv), tmp_path / "work"
    kwargs = dict(task_dir=folder, pretrained=False, folds=[0], work_dir=work, **TINY)
    plain = evaluate("resnet18_uscl", **kwargs)  # units kept without masks
    caplog.set_level(logging.INFO, logger="timm_uscl.training.evaluation")
    args = ["--image-size", "32", "--epochs", "1", "--folds", "0", "--no-progress", "--work-dir", str(work)]
    assert cli(["evaluate", "resnet18_uscl", "--random-init", "--task-dir", str(folder), *args, "--save-masks",
                str(tmp_path / "first")]) == 0  # fmt: skip
    again = evaluate("resnet18_uscl", save_masks=tmp_path / "second", **kwargs)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("evaluation.units")]
    assert len(lines) == 2 and "kept in" not in lines[0] and "kept in" in lines[1]  # computed again, then kept
    first, second = _masks(tmp_path / "first"), _masks(tmp_path / "second")
    assert sorted(first) == [f"seg/fold0_seed0/images/im{i}.png" for i in (0, 2, 4, 6)] and first == second
    assert again["tasks"]["seg"]["protocols"] == plain["tasks"]["seg"]["protocols"]


def test_a_unit_whose_file_was_lost_after_its_masks_were_written_runs_again_and_replaces_them(
    tmp_path: Path, write_png: Callable[..., Path], write_csv: Callable[..., Path]
) -> None:
    folder, work = _seg_dir(tmp_path / "seg", write_png, write_csv), tmp_path / "work"
    kwargs = dict(task_dir=folder, pretrained=False, folds=[0], work_dir=work, **TINY)
    evaluate("resnet18_uscl", save_masks=tmp_path / "first", **kwargs)
    for unit in work.glob("*.json"):  # killed between the masks and the unit file, or the file deleted
        unit.unlink()
    evaluate("resnet18_uscl", save_masks=tmp_path / "second", **kwargs)
    assert _masks(tmp_path / "first") == _masks(tmp_path / "second")
