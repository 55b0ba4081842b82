"""A pretraining job can be watched (issue 18.5): a start banner, the whole run's ETA, one log line per epoch without
the bar, plots while it runs, wall time in summary.json, and optional packages checked before the folder is claimed."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

from runs import TINY
from timm_uscl.errors import USCLError
from timm_uscl.training import engine
from timm_uscl.training.config import load_config
from timm_uscl.training.monitor import Metrics, duration


def test_a_run_without_the_bar_logs_a_banner_one_line_per_epoch_plots_while_running_and_its_wall_time(
    clip_folder: Path, tmp_path: Path, caplog, monkeypatch
):
    out = tmp_path / "run"
    config = load_config(
        "meta_uscl", overrides={**TINY, "source": str(clip_folder), "out_dir": str(out), "epochs": 2, "max_steps": 5}
    )
    plots_before_the_end: list[bool] = []
    finish = engine.finish_run

    def finish_run(run, progress, metrics):  # the plots must exist before the run ends (drawn at the checkpoints)
        plots_before_the_end.append((out / "plots" / "loss.png").is_file())
        return finish(run, progress, metrics)

    monkeypatch.setattr(engine, "finish_run", finish_run)
    with caplog.at_level(logging.INFO, logger="timm_uscl.training.engine"):
        result = engine.pretrain(config, progress=False)
    messages = [r.getMessage() for r in caplog.records if r.name == "timm_uscl.training.engine"]
    banner = next(m for m in messages if m.startswith("pretrain meta_uscl"))
    for fact in (
        f"data {clip_folder}",
        "training videos",
        "meta videos",
        "steps/epoch x 2 epochs = ",
        "resnet18_uscl 11.",
        "M parameters + CMW-Net",
        "device cpu, ",
        "export resnet18_uscl.run",
    ):
        assert fact in banner, (fact, banner)
    assert re.search(r"device cpu, (fp32|bf16 autocast), \d+ threads", banner), banner
    epochs = [m for m in messages if m.startswith("epoch ") and "run ETA" in m]
    assert [m.split(":")[0] for m in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert f"step {result.steps}/{result.steps}" in epochs[-1] and "loss " in epochs[-1] and "pairs/s" in epochs[-1]
    assert plots_before_the_end == [True]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["wall_s"] > 0 and summary["environment"]["timm_uscl"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("elapsed_s" in line for line in lines if "loss" in line)
    assert lines[-1]["step"] == result.steps and lines[-1]["eta_s"] == 0


def test_a_missing_tensorboard_is_reported_before_the_run_folder_is_claimed(
    clip_folder: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    out = tmp_path / "run"
    config = load_config(
        "meta_uscl", overrides={**TINY, "source": str(clip_folder), "out_dir": str(out), "tensorboard": True}
    )
    with pytest.raises(USCLError, match="tensorboard=true needs the tensorboard package.*nothing was written"):
        engine.pretrain(config, progress=False)
    assert not out.exists()


def test_the_run_eta_is_the_pace_so_far_times_the_steps_left(tmp_path: Path, monkeypatch):
    metrics = Metrics(tmp_path, enabled=False, tensorboard=False)
    metrics.plan(first_step=10, total_steps=110)
    assert metrics.eta(10) is None  # no step taken yet in this process
    monkeypatch.setattr(metrics, "elapsed", lambda: 20.0)
    assert metrics.eta(30) == pytest.approx(20.0 / 20 * 80)
    metrics.plan(first_step=0, total_steps=0)
    assert metrics.eta(5) is None  # the run's length is unknown (a streamed Hub dataset)
    assert (duration(42), duration(185), duration(3720)) == ("42s", "3m05s", "1h02m")
