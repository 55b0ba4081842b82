"""benchmarks/repro_report.py reads a run root mid-run as well as finished, and never inflates a killed attempt."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from types import ModuleType

import pytest

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "repro_report.py"


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("repro_report", REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_root_before_its_first_online_probe_and_with_a_killed_attempt_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "stages").mkdir(parents=True)
    (root / "plan.json").write_text(json.dumps({"epochs": 300}))
    run = root / "pretrain_uscl"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "step": 10 * e, "loss": 1.0 / e, "pairs_per_s": 50.0}) for e in (1, 2))
    )
    started = time.time() - 3600  # killed an hour ago, two minutes after it started
    (root / "stages" / "pretrain_uscl.json").write_text(
        json.dumps({"status": "running", "commit": "a" * 40, "attempts": 1, "wall_s": 0.0, "attempt_started": started})
    )
    for path in run.iterdir():
        os.utime(path, (started + 120, started + 120))
    _report().main(["--root", str(root)])
    out = capsys.readouterr().out
    assert "| pretrain_uscl | running | aaaaaaa | 1 | 2.0 min so far |" in out  # not the hour since
    assert "| USCL | 20 | 0.750 | 50.0 | – (epoch –) | – |" in out  # no online probe yet
