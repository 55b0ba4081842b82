"""``timm-uscl evaluate MODEL --task-dir DIR``: your own data (issue 11.2). Every folder here is made by the test
from frames of the licence-cleared fixture videos (never committed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from timm_uscl.cli import main as cli
from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation.task_dir import task_from_dir

Frames = dict[str, list[np.ndarray]]
CLI_TINY = ["--random-init", "--image-size", "32", "--epochs", "1", "--frames-per-video", "2", "--no-progress"]


@pytest.fixture(scope="module")
def dirs(
    tmp_path_factory: pytest.TempPathFactory,
    fixture_frames: Frames,
    write_png: Callable[..., Path],
    write_csv: Callable[..., Path],
    encode_clip: Callable[..., Path],
) -> dict[str, Path]:
    """image/ (class folders of PNGs), image_csv/ (CSV with a patient column), clips/ (class folders of mp4s),
    frame_folders/ (class folders of frame folders) and seg/ (CSV with masks)."""
    top = tmp_path_factory.mktemp("task_dirs")
    rows, seg_rows = [], []
    for label, frames in fixture_frames.items():
        for i, f in enumerate(frames):
            write_png(top / "image" / label / f"{label}_{i:02d}.png", f)
            write_png(top / "image_csv" / "frames" / f"{label}_{i:02d}.png", f)
            rows.append([f"frames/{label}_{i:02d}.png", label, f"{label}-patient{i // 3}"])
            mask = np.zeros_like(f)
            mask[8 + i % 8 : 24 + i % 8, 10:30] = 255
            write_png(top / "seg" / "images" / f"{label}_{i:02d}.png", f)
            write_png(top / "seg" / "masks" / f"{label}_{i:02d}.png", mask)
            seg_rows.append([f"images/{label}_{i:02d}.png", f"masks/{label}_{i:02d}.png", f"{label}{i // 3}"])
        for c in range(len(frames) // 3):
            clip = frames[3 * c : 3 * c + 3]
            encode_clip(top / "clips" / label / f"clip{c}.mp4", clip)
            for j, f in enumerate(clip):
                write_png(top / "frame_folders" / label / f"clip{c}" / f"frame_{j:03d}.png", f)
    write_csv(top / "image_csv" / "metadata.csv", ["file_name", "label", "patient"], rows)
    write_csv(top / "seg" / "metadata.csv", ["file_name", "mask_file_name", "group"], seg_rows)
    return {p.name: p for p in top.iterdir()}


def _folds_are_grouped(items: list[Any]) -> bool:
    fold_of: dict[str, set[int]] = {}
    for it in items:
        fold_of.setdefault(it.group, set()).add(it.fold)
    return all(len(f) == 1 for f in fold_of.values())


def test_class_folders_of_images_are_an_image_task(dirs: dict[str, Path]) -> None:
    spec, items = task_from_dir(dirs["image"])
    assert spec.kind == "image" and spec.classes == ("covid", "pneumonia", "regular")
    assert len(items) == 42 and {it.fold for it in items} == {0, 1, 2, 3, 4}
    assert items == task_from_dir(dirs["image"])[1]  # deterministic folds
    assert all(it.path.parent.name == spec.classes[it.label] for it in items)


def test_a_csv_with_a_group_column_gives_grouped_folds(dirs: dict[str, Path], edit_csv: Callable[..., None]) -> None:
    spec, items = task_from_dir(dirs["image_csv"], group_column="patient")
    assert spec.kind == "image" and len(items) == 42 and _folds_are_grouped(items)
    assert {it.group for it in items} == {
        f"{c}-patient{k}" for c, n in (("covid", 4), ("pneumonia", 4), ("regular", 6)) for k in range(n)
    }
    with pytest.raises(EvaluationError, match="'subject'"):
        task_from_dir(dirs["image_csv"], group_column="subject")


def test_a_fold_column_is_used_as_given(dirs: dict[str, Path], tmp_path: Path, edit_csv: Callable[..., None]) -> None:
    import shutil

    folder = Path(shutil.copytree(dirs["image_csv"], tmp_path / "with_folds"))
    edit_csv(folder / "metadata.csv", lambda rows: [{**r, "fold": str(int(r["patient"][-1]) % 3)} for r in rows])
    _, items = task_from_dir(folder, group_column="patient")
    assert {it.fold for it in items} == {0, 1, 2} and _folds_are_grouped(items)


@pytest.mark.parametrize("name", ["clips", "frame_folders"])
def test_clips_and_frame_folders_are_video_tasks(dirs: dict[str, Path], name: str) -> None:
    spec, items = task_from_dir(dirs[name])
    assert spec.kind == "video" and spec.classes == ("covid", "pneumonia", "regular") and len(items) == 14


def test_a_csv_with_masks_is_a_segmentation_task(dirs: dict[str, Path]) -> None:
    spec, items = task_from_dir(dirs["seg"])
    assert spec.kind == "segmentation" and all(it.mask is not None for it in items) and _folds_are_grouped(items)


def test_task_kind_must_fit_the_layout(dirs: dict[str, Path]) -> None:
    with pytest.raises(EvaluationError, match="segmentation"):
        task_from_dir(dirs["image"], kind="segmentation")
    assert task_from_dir(dirs["seg"], kind="segmentation")[0].kind == "segmentation"


def test_an_image_listed_twice_in_a_task_dir_is_refused(
    dirs: dict[str, Path], tmp_path: Path, edit_csv: Callable[..., None]
) -> None:
    """N1: the probe's alias (``./frames/x.png`` under another group) leaked test images into training."""
    import shutil

    folder = Path(shutil.copytree(dirs["image_csv"], tmp_path / "alias"))
    edit_csv(
        folder / "metadata.csv",
        lambda rows: [*rows, {**rows[5], "file_name": "./" + rows[5]["file_name"], "patient": "copy"}],
    )
    with pytest.raises(EvaluationError, match=r"metadata.csv lines 7 and 44: both name covid_05.png"):
        task_from_dir(folder, group_column="patient")


def test_a_label_typo_or_a_one_item_class_is_refused_naming_its_line(
    dirs: dict[str, Path], tmp_path: Path, edit_csv: Callable[..., None]
) -> None:
    """N6: ``pneumonai`` on one row became a class of its own that most test folds lack (macro-F1 averaged its 0)."""
    import shutil

    folder = Path(shutil.copytree(dirs["image_csv"], tmp_path / "typo"))
    edit_csv(
        folder / "metadata.csv",
        lambda rows: [{**r, "label": "pneumonai"} if i == 20 else r for i, r in enumerate(rows)],
    )
    with pytest.raises(EvaluationError, match=r"class 'pneumonai' has one item \(line 22\)"):
        task_from_dir(folder, group_column="patient")


def test_a_class_missing_from_a_test_fold_is_named_in_a_warning(
    dirs: dict[str, Path], tmp_path: Path, edit_csv: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    folder = Path(shutil.copytree(dirs["image_csv"], tmp_path / "rare"))
    edit_csv(
        folder / "metadata.csv", lambda rows: [{**r, "patient": "one"} if r["label"] == "covid" else r for r in rows]
    )
    task_from_dir(folder, group_column="patient")
    assert "class 'covid' (12 items: line 2, line 3," in caplog.text and "is in no test item of fold(s)" in caplog.text


def _damaged(dirs: dict[str, Path], tmp_path: Path, how: str) -> Path:
    import shutil

    folder = Path(shutil.copytree(dirs["image"], tmp_path / "damaged"))
    if how == "stray file":
        (folder / "covid" / "notes.txt").write_text("hello")
    elif how == "one class":
        for c in ("pneumonia", "regular"):
            shutil.rmtree(folder / c)
    elif how == "empty":
        for c in ("covid", "pneumonia", "regular"):
            shutil.rmtree(folder / c)
    elif how == "link to another class's image":
        (folder / "regular" / "alias.png").symlink_to(folder / "covid" / "covid_00.png")
    elif how == "escaping link":
        (folder / "covid" / "link.png").symlink_to(tmp_path / "outside.png")
    return folder


@pytest.mark.parametrize("how", ["stray file", "one class", "empty", "escaping link", "link to another class's image"])
def test_a_bad_task_dir_is_a_one_line_error(
    dirs: dict[str, Path], tmp_path: Path, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _damaged(dirs, tmp_path, how)
    with pytest.raises(EvaluationError) as info:
        task_from_dir(folder)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)
    assert cli(["evaluate", "resnet18", "--task-dir", str(folder), *CLI_TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err


def test_a_missing_task_dir_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["evaluate", "resnet18", "--task-dir", str(tmp_path / "nowhere"), *CLI_TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "nowhere") in err


@pytest.mark.parametrize(
    ("name", "extra", "levels"),
    [
        ("image_csv", ["--group-column", "patient"], ["image"]),
        ("clips", [], ["frame", "video"]),
        ("frame_folders", ["--task-kind", "video"], ["frame", "video"]),
        ("seg", [], None),
    ],
)
def test_evaluate_runs_the_same_protocols_on_a_task_dir(
    dirs: dict[str, Path], tmp_path: Path, name: str, extra: list[str], levels: list[str] | None
) -> None:
    out = tmp_path / "results.json"
    argv = ["evaluate", "resnet18", "--task-dir", str(dirs[name]), *extra, *CLI_TINY, "--folds", "0", "1"]
    assert cli([*argv, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert list(results["tasks"]) == [name]
    task = results["tasks"][name]
    assert list(task["protocols"]) == (["finetune"] if levels is None else ["finetune", "linear"])
    for pres in task["protocols"].values():
        assert [f["fold"] for f in pres["folds"]] == [0, 1]
        if levels is not None:
            assert list(pres["folds"][0]["metrics"]) == levels
