"""The prepared device run (scripts/device/), dry-run on CPU: bundle, one command, return limits, resume."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import timm
import torch

from timm_uscl.training.data import DataConfig
from timm_uscl.training.data.store import build_store, save_store

REPO = Path(__file__).resolve().parents[2]
DEVICE = REPO / "scripts" / "device"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DEVICE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drv() -> ModuleType:
    return _script("run_device")


def test_resume_state_travels_in_parts_with_fp16_weights_and_no_moments(tmp_path: Path) -> None:
    pack = _script("device_pack")
    model = timm.create_model("resnet18", num_classes=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    opt.step()
    weights = model.state_dict()
    weights["bn1.running_var"][0] = 1e6  # an early BatchNorm variance can pass fp16's range: kept in fp32
    state = {"model": weights, "optimizer": opt.state_dict(), "epoch": 3, "step": 41, "data": [{"x": 1}]}
    torch.save(state, tmp_path / "last.pt")
    parts = pack.pack_resume(tmp_path / "last.pt", tmp_path / "out", "resume_x")
    assert len(parts) == 2 and all(p.stat().st_size <= pack.PART_BYTES for p in parts)
    assert pack.parts_of(tmp_path / "out", "resume_x") == parts
    note = pack.unpack_resume(parts, tmp_path / "again.pt")
    back = torch.load(tmp_path / "again.pt", weights_only=True)
    assert note == {"model_dtype": "float16", "optimizer_state": "dropped"}
    assert (back["epoch"], back["step"], back["data"]) == (3, 41, [{"x": 1}]) and back["optimizer"]["state"] == {}
    assert torch.equal(back["model"]["bn1.running_var"], weights["bn1.running_var"])
    for k, v in weights.items():
        rounded = v if k == "bn1.running_var" else v.half().to(v.dtype)
        assert back["model"][k].dtype == v.dtype and torch.equal(back["model"][k], rounded)
    parts[1].unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 2 parts of resume_x"):
        pack.parts_of(tmp_path / "out", "resume_x")


def test_backbone_shards_are_each_a_safetensors_file_under_the_part_size(tmp_path: Path) -> None:
    pack = _script("device_pack")
    sd = timm.create_model("resnet18", num_classes=0).state_dict()
    sd["bn1.running_var"][0] = 1e6
    parts = pack.save_shards(sd, tmp_path, "backbone")
    assert len(parts) == 2 and all(p.stat().st_size <= pack.PART_BYTES for p in parts)
    merged = pack.load_shards(parts)
    assert merged.keys() == sd.keys() and torch.equal(merged["bn1.running_var"], sd["bn1.running_var"])
    assert all(torch.equal(merged[k], v.half()) for k, v in sd.items() if k != "bn1.running_var")


def test_the_deadline_interrupts_a_stage(drv: ModuleType) -> None:
    with pytest.raises(drv.StageCut), drv.deadline(0.05):
        for _ in range(1000):
            time.sleep(0.01)


def _settings(drv: ModuleType, root: Path, **kw: object) -> Any:
    base = dict(
        bundle=root / "bundle",
        out=root / "out",
        work=root / "work",
        device="cpu",
        epochs=1,
        size=32,
        batch=2,
        meta_batch=2,
        eval_epochs=1,
        frames=2,
        folds=[0],
        tasks=["pocus"],
        methods=["simclr"],
        max_items=2,
        budget_s=3600.0,
        finish_s=0.0,
        start=time.time(),
        bench_batches=2,
        checkpoint_every=2,
    )
    return drv.Settings(**{**base, **kw})


@contextlib.contextmanager
def _interrupt_at_step(n: int) -> Iterator[None]:
    """The lease's deadline arriving during training step ``n`` (deterministic, unlike a timer)."""
    from timm_uscl.training import engine

    real, calls = engine._step, [0]

    def step(run: Any, progress: Any, batch: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return real(run, progress, batch)

    engine._step = step
    try:
        yield
    finally:
        engine._step = real


def test_a_pretraining_cut_at_the_deadline_continues_in_the_next_lease(
    drv: ModuleType, clip_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = shutil.copytree(clip_folder, tmp_path / "covid_blues")  # the store's data name is what the run trains on
    store = build_store(DataConfig(source=str(data), image_size=32))
    first = _settings(drv, tmp_path / "lease1")
    first.work.mkdir(parents=True)
    save_store(store, first.work / "store.frames")
    results = drv.Results.carried(first.bundle / "resume" / "results.json")
    monkeypatch.setattr(drv, "deadline", lambda seconds: _as_cut(drv))
    with _interrupt_at_step(3):  # 8 training videos in batches of 2: mid-epoch, after the checkpoint at step 2
        drv.run_stage(first, results, "pretrain:simclr", lambda: drv.pretrain(first, results, "simclr"))
    assert results.data["stages"]["pretrain:simclr"]["status"] == "cut"
    drv.finish(first, results)
    returned = sorted(p.name for p in first.out.iterdir())
    assert "resume_simclr.part1of2.pt" in returned and len(returned) <= 8

    shutil.rmtree(first.work)  # the next lease is a bare machine; the run's paths are the same (relative there)
    second = _settings(drv, tmp_path / "lease2", work=first.work)
    shutil.copytree(first.out, second.bundle / "resume")
    second.work.mkdir(parents=True)
    save_store(store, second.work / "store.frames")
    carried = drv.Results.carried(second.bundle / "resume" / "results.json")
    drv.restore(second, carried)
    assert torch.load(second.work / "simclr" / "last.pt", weights_only=True)["data"][0]["position"] == 2
    drv.run_stage(second, carried, "pretrain:simclr", lambda: drv.pretrain(second, carried, "simclr"))
    run = carried.data["runs"]["simclr"]
    assert carried.data["stages"]["pretrain:simclr"]["status"] == "done" and run["resumed"]
    assert run["summary"]["steps"] == 4  # as many steps as the uninterrupted epoch: nothing skipped or repeated


@contextlib.contextmanager
def _as_cut(drv: ModuleType) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise drv.StageCut from None


def _env(tmp: Path, **kw: str) -> dict[str, str]:
    env = dict(os.environ, DEVICE="cpu", EPOCHS="1", SIZE="32", BATCH="4", META_BATCH="2", EVAL_EPOCHS="1")
    env.update(FRAMES="2", FOLDS="0", MAX_ITEMS="2", BENCH_BATCHES="3", JOINT="0", INSTALL="0")
    env.update(PYTHON=sys.executable, BUNDLE=str(tmp / "bundle"), OUT=str(tmp / "out"), WORK=str(tmp / "work"))
    return {**env, **kw}


@pytest.mark.slow
def test_the_device_run_dry_runs_on_cpu_within_the_return_limits_and_resumes(
    drv: ModuleType,
    clip_folder: Path,
    data_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = _script("build_bundle")
    opts = ["--data", str(data_root), "--pretrain-data", str(clip_folder), "--size", "32", "--frames", "2"]
    opts += ["--max-items", "2", "--no-wheels", "--out", str(tmp_path / "bundle")]
    assert bundle.main(opts) == 0
    assert "of the 64 MiB one device call carries (fits)" in capsys.readouterr().out

    ran = subprocess.run(["bash", str(DEVICE / "run.sh")], env=_env(tmp_path), capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 15 << 20 for f in files)
    assert {"results.json", "results.md", "folds.png", "run.log"} <= set(files)
    results = json.loads((out / "results.json").read_text())
    stages = {k: v["status"] for k, v in results["stages"].items()}
    assert set(stages.values()) == {"done"} and set(results["evals"]) == {"meta_uscl", "uscl", "simclr", "random"}
    assert results["bench"]["store_pairs_per_s"] > 0 and results["runs"]["meta_uscl"]["summary"]["steps"] == 2
    table = (out / "results.md").read_text()
    assert "| Meta-USCL |" in table and "| random init |" in table and "frame store" in table
    backbone = [out / f for f in files if f.startswith("meta_uscl_backbone_fp16")]
    model = timm.create_model("resnet18_uscl", num_classes=0)
    model.load_state_dict({k: v.float() for k, v in _script("device_pack").load_shards(backbone).items()})

    # the next lease, on a bare machine, from what came back: nothing is trained or evaluated twice
    assert bundle.main([*opts, "--resume-from", str(out)]) == 0
    for key, value in _env(tmp_path, OUT=str(tmp_path / "out2"), WORK=str(tmp_path / "work2")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RUN_START", raising=False)
    assert drv.main() == 0
    again = json.loads((tmp_path / "out2" / "results.json").read_text())
    assert again["evals"] == results["evals"] and again["stages"] == results["stages"]
    assert len(again["leases"]) == 2 and not (tmp_path / "work2" / "meta_uscl" / "export").exists()
