"""The trainer end to end: smoke run + export, SIGKILL and resume, NaN stop, two-process DDP (gloo)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

from runs import TINY
from timm_uscl.training.checkpoint import CHECKPOINT_NAME, load_training_state
from timm_uscl.training.config import load_config
from timm_uscl.training.engine import TrainingDivergedError, lr_factor, pretrain

TINY_CLI = [
    "--image-size",
    "32",
    "--workers",
    "0",
    "--set",
    "meta_batch_size=2",
    "--set",
    "cache_dir=null",
    "--set",
    "log_every=1",
]


def _config(source: Path, out: Path, **overrides):
    return load_config("meta_uscl", overrides={**TINY, "source": str(source), "out_dir": str(out), **overrides})


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "timm_uscl.cli", "pretrain", *args, "--no-progress"]


def test_lr_schedule_matches_the_reference():
    config = load_config("meta_uscl")
    assert lr_factor(config, 0) == pytest.approx(0.1 + 0.9 * math.exp(-5.0))  # ~0.106, as the reference
    assert lr_factor(config, 10) == pytest.approx(1.0)
    assert lr_factor(config, 299) == pytest.approx(0.5 * (1 + math.cos(math.pi * 289 / 290)))
    uscl = load_config("uscl")
    assert lr_factor(uscl, 5) == 1.0 and lr_factor(uscl, 160) < 1.0


def test_smoke_run_writes_a_loadable_export(clip_folder, tmp_path):
    result = pretrain(_config(clip_folder, tmp_path / "run", epochs=2), progress=False)
    run = tmp_path / "run"
    # the frame store (the CPU default): 8 training videos (2 held out for meta) -> batches of 3, 3, 2 per epoch
    assert result.steps == 6
    for name in (
        "config.yaml",
        CHECKPOINT_NAME,
        "metrics.jsonl",
        "summary.json",
        "plots/loss.png",
        "plots/lr.png",
        "plots/cmw_weights.png",
        "export/config.json",
        "export/model.safetensors",
        "export/projection_head.safetensors",
        "export/cmw_net.safetensors",
        "export/README.md",
    ):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, result.steps + 1))
    assert all("meta_loss" in r and 0 < r["weight_mean"] < 1 and 0 <= r["data_wait"] <= 1 for r in records)
    model: Any = timm.create_model(f"local-dir:{run / 'export'}", pretrained=True)  # timm's attributes: dynamic
    backbone = {
        k: v for k, v in load_training_state(run / CHECKPOINT_NAME)["model"].items() if k.startswith("backbone.")
    }
    assert all(torch.equal(model.state_dict()[k[len("backbone.") :]], v) for k, v in backbone.items())
    assert tuple(model.pretrained_cfg["input_size"]) == (3, 32, 32)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(clip_folder, tmp_path, monkeypatch):
    from timm_uscl.training import engine

    pretrain(_config(clip_folder, tmp_path, epochs=1, max_steps=1), progress=False)
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()

    def diverging_step(*args, **kwargs):  # fault injection: the step's loss comes back NaN
        out = real_step(*args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    real_step = engine.meta_step
    monkeypatch.setattr(engine, "meta_step", diverging_step)
    with pytest.raises(TrainingDivergedError, match="loss became nan.*last good checkpoint"):
        pretrain(_config(clip_folder, tmp_path, epochs=2), resume=True, progress=False)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(clip_folder, tmp_path):
    # 3 meta videos in batches of 2: every meta batch draws a new permutation, so the resume must restore its position
    args = ["--data", str(clip_folder), "--epochs", "3", "--batch-size", "3", "--set", "checkpoint_every=1", *TINY_CLI]
    args += ["--set", "meta_fraction=0.3"]
    reference = subprocess.run(_cli(*args, "--out", str(tmp_path / "ref")), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = tmp_path / "run"
    # the victim pauses 2 s after each checkpoint it writes, so the kill lands mid-run however fast the machine is
    slow = (
        "import sys, time; from timm_uscl.training import engine; real = engine.save_checkpoint; "
        "engine.save_checkpoint = lambda *a, **k: (real(*a, **k), time.sleep(2))[0]; "
        "from timm_uscl.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    victim = [sys.executable, "-c", slow, *_cli(*args, "--out", str(out))[3:]]
    proc = subprocess.Popen(victim, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if (out / CHECKPOINT_NAME).exists():
            state = load_training_state(out / CHECKPOINT_NAME)
            if state["step"] >= 3:  # mid-epoch 2
                proc.send_signal(signal.SIGKILL)
                killed_at = state["step"]
                break
        time.sleep(0.2)
    proc.wait(timeout=60)
    stderr = proc.stderr.read().decode()[-2000:] if proc.stderr is not None else ""
    assert killed_at is not None, f"run ended before it could be killed: {stderr}"
    assert not (out / "export").exists()

    done = subprocess.run(_cli(*args, "--out", str(out), "--resume"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6  # 3 epochs x 2 steps: nothing repeated, nothing lost
    expected = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert summary["rank_weight_hashes"] == expected["rank_weight_hashes"], "resumed run diverged from the reference"
    assert (out / "export" / "model.safetensors").is_file()


def test_a_checkpoint_in_the_older_format_resumes_where_it_stopped(clip_folder, tmp_path):
    # last.pt files written before the progress fields were renamed hold ``epoch`` (the epochs done) for ``epochs_done``
    reference = pretrain(_config(clip_folder, tmp_path / "ref", epochs=2), progress=False)
    out = tmp_path / "run"
    pretrain(_config(clip_folder, out, epochs=2, max_steps=4), progress=False)  # stops in epoch 2, after step 4
    state = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert (state["epochs_done"], state["step"]) == (1, 4)
    state["epoch"] = state.pop("epochs_done")  # the older format, as that trainer wrote it
    torch.save(state, out / CHECKPOINT_NAME)
    assert load_training_state(out / CHECKPOINT_NAME)["epochs_done"] == 1

    resumed = pretrain(_config(clip_folder, out, epochs=2), resume=True, progress=False)
    assert (resumed.epochs, resumed.steps) == (2, reference.steps)
    assert resumed.weights_hash == reference.weights_hash, "the resumed run diverged from the uninterrupted one"


def test_two_process_ddp_ends_with_identical_weights(clip_folder, tmp_path):
    out = tmp_path / "ddp"
    with socket.socket() as probe:  # a free loopback port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        port,
        "-m",
        "timm_uscl.cli",
        "pretrain",
        "--data",
        str(clip_folder),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        *TINY_CLI,
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    hashes = summary["rank_weight_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # backbone, head and CMW-Net on both ranks
    assert summary["world_size"] == 2
    assert summary["steps"] == 2  # 8 training videos, sharded 4 per rank by file, batch 2


def test_online_evaluation_logs_probe_accuracy_per_epoch_and_plots_it(clip_folder, data_root, tmp_path):
    online = {
        "online_eval": "pocus",
        "online_data_root": str(data_root),
        "online_every": 1,
        "online_frames": 2,
        "online_max_items": 3,
    }
    pretrain(_config(clip_folder, tmp_path / "run", epochs=2, **online), progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    probes = [r for r in records if "online_knn_acc" in r]
    assert [r["epoch"] for r in probes] == [1, 2]
    assert all(0.0 <= r["online_knn_acc"] <= 1.0 and 0.0 <= r["online_linear_acc"] <= 1.0 for r in probes)
    assert (tmp_path / "run" / "plots" / "online.png").is_file()
    assert (tmp_path / "run" / "plots" / "loss.png").is_file()  # the loss plot skips the online lines


def test_online_evaluation_is_off_by_default(clip_folder, tmp_path):
    pretrain(_config(clip_folder, tmp_path / "run", epochs=1), progress=False)
    records = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "online_" not in records and not (tmp_path / "run" / "plots" / "online.png").exists()


def test_graph_captured_steps_fall_back_to_eager_on_cpu_and_say_so(clip_folder, tmp_path):
    result = pretrain(_config(clip_folder, tmp_path / "run", epochs=1, graphs="auto"), progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["graphs"]["eager"] == result.steps and summary["graphs"]["replays"] == 0
    assert "cuda" in summary["graphs"]["reason"].lower() or "cpu" in summary["graphs"]["reason"].lower()
