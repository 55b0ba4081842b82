"""Bad evaluation data is a one-line error naming the file and the fix (L3, L15), and nothing outside a task's
folder is read (L9). Every case damages a private copy of the synthetic data root."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from timm_uscl.cli import main as cli
from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation.decoding import load_task
from timm_uscl.training.evaluation.tasks import TASKS, load_items


def _load(root: Path, task: str) -> None:
    """Read the metadata and decode every item, as evaluate() does before any model work."""
    spec = TASKS[task]
    load_task(spec, load_items(spec, root), size=32, frames_per_video=2, progress=False)


def _error(root: Path, task: str, *match: str) -> str:
    with pytest.raises(EvaluationError) as info:
        _load(root, task)
    message = str(info.value)
    assert "\n" not in message
    for m in match:
        assert m in message, message
    return message


# files ---------------------------------------------------------------------------------------------------------


def test_a_missing_video_names_the_file_and_its_metadata(root_copy: Path) -> None:
    (root_copy / "pocus" / "videos" / "covid_2.mp4").unlink()
    _error(root_copy, "pocus", str(root_copy / "pocus" / "videos" / "covid_2.mp4"), "metadata.csv")


def test_a_zero_byte_video_is_refused(root_copy: Path) -> None:
    (root_copy / "pocus" / "videos" / "regular_0.mp4").write_bytes(b"")
    _error(root_copy, "pocus", "regular_0.mp4", "empty")


def test_a_corrupt_video_is_refused(root_copy: Path) -> None:
    (root_copy / "covid_blues" / "lus_videos" / "patient_31_L1.mp4").write_bytes(os.urandom(5000))
    _error(root_copy, "covid_blues", "patient_31_L1.mp4", "metadata.csv")


@pytest.mark.parametrize("damage", [b"", b"not a png at all"])
def test_a_broken_image_or_mask_is_refused(root_copy: Path, damage: bytes) -> None:
    (root_copy / "busi" / "images" / "benign_1.png").write_bytes(damage)
    _error(root_copy, "busi", "benign_1.png")
    (root_copy / "busi" / "images" / "benign_1.png").unlink()
    _error(root_copy, "busi", "benign_1.png", "missing")


def test_a_missing_mask_is_refused(root_copy: Path) -> None:
    (root_copy / "busi" / "masks" / "malignant_3.png").unlink()
    _error(root_copy, "busi_seg", "masks/malignant_3.png")


# metadata ------------------------------------------------------------------------------------------------------


def test_a_missing_column_is_named(root_copy: Path, edit_csv: Callable[..., None]) -> None:
    edit_csv(
        root_copy / "pocus" / "metadata.csv", lambda rows: [{k: v for k, v in r.items() if k != "fold"} for r in rows]
    )
    _error(root_copy, "pocus", "metadata.csv", "'fold'")


def test_a_non_integer_fold_is_named_with_its_line(root_copy: Path, edit_csv: Callable[..., None]) -> None:
    edit_csv(
        root_copy / "busi" / "metadata.csv",
        lambda rows: [{**r, "fold": "x" if i == 4 else r["fold"]} for i, r in enumerate(rows)],
    )
    _error(root_copy, "busi", "metadata.csv", "line 6", "'x'")


def test_unknown_labels_are_listed_not_dropped(root_copy: Path, edit_csv: Callable[..., None]) -> None:
    def typos(rows: list[dict[str, str]]) -> list[dict[str, str]]:
        rows[0]["label"], rows[3]["label"] = "COVID", "covid "
        return rows

    edit_csv(root_copy / "pocus" / "metadata.csv", typos)
    _error(root_copy, "pocus", "metadata.csv", "'COVID'", "'covid '", "covid, pneumonia, regular")


def test_a_fold_outside_the_folds_is_refused(root_copy: Path, edit_csv: Callable[..., None]) -> None:
    edit_csv(
        root_copy / "busi" / "metadata.csv",
        lambda rows: [{**r, "fold": "7" if i == 0 else r["fold"]} for i, r in enumerate(rows)],
    )
    _error(root_copy, "busi", "metadata.csv", "fold 7", "0-4")


@pytest.mark.parametrize("alias", ["videos/covid_0.mp4", "./videos/covid_0.mp4", "videos/../videos/covid_0.mp4"])
def test_a_video_listed_twice_is_refused_naming_both_lines(
    root_copy: Path, alias: str, edit_csv: Callable[..., None]
) -> None:
    """N1/L15: a second row for a test-fold video (another group and fold) would make it training data."""
    extra = {"file_name": alias, "label": "covid", "probe": "convex", "group": "g99", "fold": "1"}
    edit_csv(root_copy / "pocus" / "metadata.csv", lambda rows: [*rows, extra])
    _error(root_copy, "pocus", "metadata.csv lines 2 and 19", "covid_0.mp4", "list each file once")


def test_a_link_to_a_listed_image_is_the_same_image(root_copy: Path, edit_csv: Callable[..., None]) -> None:
    (root_copy / "busi" / "images" / "alias.png").symlink_to("benign_0.png")
    extra = {"file_name": "images/alias.png", "label": "benign", "mask_file_name": "masks/benign_1.png"}
    edit_csv(root_copy / "busi" / "metadata.csv", lambda rows: [*rows, {**extra, "dup_group": "x", "fold": "3"}])
    _error(root_copy, "busi", "lines 2 and 17", "benign_0.png")


def test_non_utf8_metadata_is_refused(root_copy: Path) -> None:
    path = root_copy / "busi" / "metadata.csv"
    path.write_bytes(path.read_bytes().replace(b"benign_1", b"b\xe9nign_1"))
    _error(root_copy, "busi", "metadata.csv", "UTF-8")


def test_a_single_class_is_refused(root_copy: Path, edit_csv: Callable[..., None]) -> None:
    edit_csv(root_copy / "covid_blues" / "metadata.csv", lambda rows: [{**r, "cov_test": "1"} for r in rows])
    _error(root_copy, "covid_blues", "metadata.csv", "one class")


def test_a_short_row_is_named(root_copy: Path) -> None:
    path = root_copy / "busi" / "metadata.csv"
    path.write_text(path.read_text() + "images/benign_0.png,benign\n")
    _error(root_copy, "busi", "metadata.csv", "line 17")


# L9: nothing outside the task folder ---------------------------------------------------------------------------


@pytest.mark.parametrize("escape", ["../outside.mp4", "/etc/passwd", "videos/../../outside.mp4", "link.mp4"])
def test_a_file_name_escaping_the_task_folder_is_refused(
    root_copy: Path, escape: str, edit_csv: Callable[..., None]
) -> None:
    outside = root_copy / "outside.mp4"
    outside.write_bytes((root_copy / "pocus" / "videos" / "covid_0.mp4").read_bytes())
    (root_copy / "pocus" / "link.mp4").symlink_to(outside)
    edit_csv(
        root_copy / "pocus" / "metadata.csv",
        lambda rows: [{**r, "file_name": escape if i == 0 else r["file_name"]} for i, r in enumerate(rows)],
    )
    with pytest.raises(EvaluationError, match="outside") as info:
        load_items(TASKS["pocus"], root_copy)  # refused while reading the metadata: nothing was opened
    assert escape in str(info.value)


def test_bad_data_on_the_command_line_is_one_line(root_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root_copy / "pocus" / "videos" / "pneumonia_4.mp4").write_bytes(b"\0" * 100)
    argv = ["evaluate", "resnet18", "--random-init", "--tasks", "pocus", "--protocol", "linear", "--folds", "0"]
    assert cli([*argv, "--data-root", str(root_copy), "--image-size", "32", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pneumonia_4.mp4" in err and "Traceback" not in err
