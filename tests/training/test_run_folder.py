"""A run folder belongs to one run: no silent replacement, no two live runs, no changed recipe on resume (H2, M3,
M4, L13 of the reliability findings), and short or broken runs end with valid, honest outputs (L4, L10, L12)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from timm_uscl.errors import CheckpointFormatError
from timm_uscl.training.checkpoint import CHECKPOINT_NAME, load_training_state, save_checkpoint
from timm_uscl.training.config import load_config
from timm_uscl.training.engine import pretrain
from timm_uscl.training.errors import RunFolderError, TrainingDivergedError
from timm_uscl.training.run_folder import claim_run_folder

TINY = {
    "image_size": 32,
    "batch_size": 3,
    "num_workers": 0,
    "meta_batch_size": 2,
    "checkpoint_every": 1,
    "log_every": 1,
    "cache_dir": None,
    "epochs": 1,
}


def _config(source: Path, out: Path, preset: str = "meta_uscl", **overrides):
    return load_config(preset, overrides={**TINY, "source": str(source), "out_dir": str(out), **overrides})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "timm_uscl.cli", "pretrain", *args, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_a_second_run_into_a_finished_run_is_refused_and_leaves_it_untouched(clip_folder, tmp_path):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out), progress=False)
    before = {name: _digest(out / name) for name in (CHECKPOINT_NAME, "config.yaml", "export/model.safetensors")}
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match="already holds a run .*--resume.*--overwrite"):
        pretrain(_config(clip_folder, out, "simclr"), progress=False)
    assert {name: _digest(out / name) for name in before} == before
    assert (out / "metrics.jsonl").read_text() == metrics


def test_overwrite_replaces_the_previous_run_whole_with_no_stale_files(clip_folder, tmp_path, caplog):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out), progress=False)  # meta_uscl: writes cmw_net.safetensors beside the export
    (out / "notes.txt").write_text("mine")
    pretrain(_config(clip_folder, out, "simclr"), progress=False, overwrite=True)
    assert "removing the previous run's" in caplog.text and "export" in caplog.text
    assert not (out / "export" / "cmw_net.safetensors").exists()  # the first run's CMW-Net is gone
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # one run's metrics, not two interleaved
    assert load_training_state(out / CHECKPOINT_NAME)["config"]["preset"] == "simclr"
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_a_live_run_holds_its_folder_against_a_second_one(tmp_path):
    first = claim_run_folder(tmp_path / "run", resume=False, overwrite=False)
    try:
        with pytest.raises(RunFolderError, match="in use by a live run .*pid"):
            claim_run_folder(tmp_path / "run", resume=True, overwrite=False)
    finally:
        first.release()
    claim_run_folder(tmp_path / "run", resume=True, overwrite=False).release()  # free again once released


def test_a_concurrent_cli_run_into_a_busy_folder_fails_with_one_line(clip_folder, tmp_path):
    out = tmp_path / "run"
    held = claim_run_folder(out, resume=False, overwrite=False)
    try:
        proc = _cli("--data", str(clip_folder), "--out", str(out), "--image-size", "32", "--epochs", "1")
    finally:
        held.release()
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("timm-uscl pretrain: error:") and "live run" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_with_a_changed_recipe_is_refused_and_the_saved_config_stays(clip_folder, tmp_path):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out), progress=False)
    saved = (out / "config.yaml").read_text()
    with pytest.raises(RunFolderError, match=r"another config \(lr 0.1 -> 0.5\)"):
        pretrain(_config(clip_folder, out, lr=0.5, epochs=2), resume=True, progress=False)
    with pytest.raises(RunFolderError, match="image_size 32 -> 64"):
        pretrain(_config(clip_folder, out, image_size=64), resume=True, progress=False)
    assert (out / "config.yaml").read_text() == saved


def test_resume_may_add_epochs_and_records_the_change(clip_folder, tmp_path):
    out = tmp_path / "run"
    first = pretrain(_config(clip_folder, out), progress=False)
    result = pretrain(_config(clip_folder, out, epochs=2, log_every=5), resume=True, progress=False)
    assert result.steps == 2 * first.steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_with_changes"] == ["epochs 1 -> 2"]


def test_resume_into_a_folder_without_a_checkpoint_is_refused_when_it_holds_a_run(clip_folder, tmp_path):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out), progress=False)
    (out / CHECKPOINT_NAME).unlink()
    with pytest.raises(RunFolderError, match="no checkpoint to resume from: pass --overwrite"):
        pretrain(_config(clip_folder, out), resume=True, progress=False)


def test_partial_checkpoints_of_a_killed_run_are_removed_on_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    partial = out / f".{CHECKPOINT_NAME}.abc123.tmp"
    partial.write_bytes(b"\0" * 1000)
    claim_run_folder(out, resume=True, overwrite=False).release()
    assert not partial.exists()


def test_an_empty_out_path_is_refused(clip_folder):
    with pytest.raises(RunFolderError, match="empty path"):
        pretrain(_config(clip_folder, Path("  ")), progress=False)


def test_a_run_shorter_than_log_every_still_writes_metrics_plots_and_a_finite_loss(clip_folder, tmp_path):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out, log_every=10, checkpoint_every=100, max_steps=2), progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]
    assert (out / "plots" / "loss.png").is_file()

    def refuse(value: str):
        raise AssertionError(f"summary.json holds {value}: not valid JSON")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert summary["final_loss"] is not None and summary["final_loss"] > 0


def test_weights_that_turn_non_finite_are_never_checkpointed(clip_folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out, max_steps=1), progress=False)
    good = (out / CHECKPOINT_NAME).read_bytes()
    real_step = torch.optim.SGD.step

    def poisoned(self, *args, **kwargs):  # the update itself goes bad; the loss of this step is still finite
        result = real_step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned)
    with pytest.raises(TrainingDivergedError, match="last good checkpoint .* is kept"):
        pretrain(_config(clip_folder, out, max_steps=3), resume=True, progress=False)
    assert (out / CHECKPOINT_NAME).read_bytes() == good


def test_a_diverging_first_run_does_not_claim_a_good_checkpoint(clip_folder, tmp_path, monkeypatch):
    from timm_uscl.training import engine

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    real = engine.meta_step
    monkeypatch.setattr(engine, "meta_step", nan_loss)
    with pytest.raises(TrainingDivergedError, match="no checkpoint was written before") as info:
        pretrain(_config(clip_folder, tmp_path / "run"), progress=False)
    assert "last good checkpoint" not in str(info.value)


def test_a_full_disk_at_a_checkpoint_is_a_one_line_error_that_keeps_the_previous_checkpoint(small_disk, tmp_path):
    disk = small_disk("64k")
    path = disk / CHECKPOINT_NAME
    save_checkpoint(path, {"step": 1})
    good = path.read_bytes()
    with pytest.raises(RunFolderError, match="could not be written .*previous one is kept") as info:
        save_checkpoint(path, {"weights": torch.zeros(200_000)})  # 800 kB into a 64 kB disk
    assert "\n" not in str(info.value)
    assert path.read_bytes() == good
    assert [p.name for p in disk.iterdir()] == [CHECKPOINT_NAME]  # no partial file left behind


def test_a_checkpoint_missing_entries_is_refused_on_resume(clip_folder, tmp_path):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out), progress=False)
    state = load_training_state(out / CHECKPOINT_NAME)
    del state["optimizer"]
    torch.save(state, out / CHECKPOINT_NAME)
    proc = _cli("--data", str(clip_folder), "--out", str(out), "--image-size", "32", "--resume", "--workers", "0")
    assert proc.returncode != 0 and "missing optimizer" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def finished_run(clip_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain(_config(clip_folder, out), progress=False)
    return out


def _tampered(finished_run: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    out = Path(shutil.copytree(finished_run, tmp_path / "run"))
    path = out / CHECKPOINT_NAME
    if how == "hostile pickle":

        class Hostile:
            def __reduce__(self):
                return (os.system, ("echo PWNED",))

        torch.save({"model": Hostile()}, path)
        return out
    state = load_training_state(path)
    if how == "step as text":
        state["step"] = "3"
    elif how == "partial model":
        del state["model"]["backbone.conv1.weight"]
    elif how == "foreign model":
        state["model"] = {"conv1.weight": torch.zeros(64, 3, 7, 7)}
    elif how == "nan weights":
        state["model"]["backbone.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, path)
    return out


@pytest.mark.parametrize(
    ("how", "needle"),
    [
        ("step as text", "wrongly typed step"),
        ("partial model", "not a checkpoint of this run"),
        ("foreign model", "not a checkpoint of this run"),
        ("nan weights", "holds non-finite weights (model tensor backbone.conv1.weight), so it cannot be resumed"),
        ("hostile pickle", "arbitrary code"),
    ],
)
def test_a_malformed_foreign_or_non_finite_last_pt_is_one_line_on_resume(
    clip_folder, finished_run, tmp_path, how, needle
):
    """L4 (raw TypeError / load_state_dict tracebacks), L5 (a hostile pickle named as such), L12 (NaN weights were
    resumed, then called "the last good checkpoint")."""
    out = _tampered(finished_run, tmp_path, how)
    with pytest.raises(CheckpointFormatError) as info:
        pretrain(_config(clip_folder, out, epochs=2), resume=True, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and str(out / CHECKPOINT_NAME) in msg and needle in msg, msg
    assert "last good checkpoint" not in msg and "download it again" not in msg


@pytest.mark.parametrize("preset", ["uscl", "meta_uscl"])
def test_resume_after_the_data_changed_under_the_same_path_is_refused_naming_the_cause(clip_folder, tmp_path, preset):
    """N7: half the videos deleted, then --resume: rc 0 (without meta) or a meta-split error that hid the cause."""
    import shutil

    data = Path(shutil.copytree(clip_folder, tmp_path / "data"))
    out = tmp_path / "run"
    pretrain(_config(data, out, preset, max_steps=1), progress=False)
    for video in sorted(data.glob("*.mp4"))[: len(list(data.glob("*.mp4"))) // 2]:
        video.unlink()
    with pytest.raises(
        RunFolderError, match=r"last.pt: the data changed since this checkpoint \(\d+ clips then"
    ) as info:
        pretrain(_config(data, out, preset, epochs=2), resume=True, progress=False)
    assert "\n" not in str(info.value) and str(data) in str(info.value)


def test_a_full_disk_at_the_first_checkpoint_does_not_claim_a_previous_one(small_disk):
    """L12: "the previous one is kept" was said when no checkpoint existed."""
    disk = small_disk("64k")
    with pytest.raises(RunFolderError, match="no earlier checkpoint exists, so none is kept") as info:
        save_checkpoint(disk / CHECKPOINT_NAME, {"weights": torch.zeros(200_000)})
    assert "previous one is kept" not in str(info.value) and "--resume" not in str(info.value)
    assert list(disk.iterdir()) == []


def test_a_run_saved_before_a_setting_existed_resumes_only_with_what_the_older_trainer_did(tmp_path):
    import dataclasses

    from timm_uscl.training.run_folder import check_resume_config

    config = dataclasses.asdict(load_config("meta_uscl"))
    older = {k: v for k, v in config.items() if k not in ("bn_views", "init")}  # a checkpoint from before both
    older["data"] = {k: v for k, v in config["data"].items() if k not in ("crop_ratio", "store")}
    with pytest.raises(RunFolderError, match="bn_views 'joint' -> 'per_view'.*init 'timm' -> 'torchvision'"):
        check_resume_config(older, config, tmp_path / CHECKPOINT_NAME)  # the older run joined views, timm's init
    as_then = {**config, "bn_views": "joint", "init": "timm", "data": {**config["data"], "store": "off"}}
    assert check_resume_config(older, as_then, tmp_path / CHECKPOINT_NAME) == []  # crop_ratio: default then too


def test_resume_allows_how_the_same_steps_execute_and_a_source_path_written_another_way(clip_folder, tmp_path):
    import dataclasses

    from timm_uscl.training.run_folder import check_resume_config

    saved = dataclasses.asdict(_config(clip_folder, tmp_path / "run"))
    relative = os.path.relpath(clip_folder)
    again = _config(relative, tmp_path / "run", graphs="auto", hypergrad="jvp", device="cpu", channels_last=True)
    assert check_resume_config(saved, dataclasses.asdict(again), tmp_path / CHECKPOINT_NAME) == []
    streamed = dataclasses.asdict(_config(clip_folder, tmp_path / "run", store="device"))
    with pytest.raises(RunFolderError, match="store"):  # the stream and the store batch an epoch differently
        check_resume_config(saved, streamed, tmp_path / CHECKPOINT_NAME)


def test_files_merely_named_like_a_runs_are_never_removed(tmp_path):
    out = tmp_path / "project"
    (out / "export").mkdir(parents=True)
    (out / "export" / "deliverable.pdf").write_text("mine")
    (out / "config.yaml").write_text("mine: true\n")
    for overwrite in (False, True):
        with pytest.raises(RunFolderError, match="no timm-uscl run .*nothing there is removed"):
            claim_run_folder(out, resume=False, overwrite=overwrite)
    assert (out / "export" / "deliverable.pdf").read_text() == "mine" and (out / "config.yaml").exists()


def test_resume_starts_afresh_an_attempt_that_failed_before_its_first_checkpoint(tmp_path):
    out = tmp_path / "run"
    claim_run_folder(out, resume=False, overwrite=False).release()  # the attempt claimed the folder ...
    (out / "config.yaml").write_text("epochs: 1\n")  # ... wrote its config and a metrics line, then failed
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(RunFolderError, match="already holds a run"):
        claim_run_folder(out, resume=False, overwrite=False)  # a plain rerun still asks what to do
    claim_run_folder(out, resume=True, overwrite=False).release()
    assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()


def test_a_torn_metrics_line_of_a_killed_run_does_not_break_resume(clip_folder, tmp_path):
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out, epochs=2, max_steps=1), progress=False)
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write('{"epoch": 1, "step": 2, "lo')  # killed while writing the line
    pretrain(_config(clip_folder, out, epochs=2), resume=True, progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]  # all valid JSON
    assert [r["step"] for r in records if "loss" in r] == sorted({r["step"] for r in records if "loss" in r})
