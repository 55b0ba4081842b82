"""Precision in evaluation (bf16 autocast, recorded, never paired with fp32) and resumable evaluation (work_dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from timm_uscl.training.errors import EvaluationError
from timm_uscl.training.evaluation import evaluate
from timm_uscl.training.evaluation import run as run_module
from timm_uscl.training.evaluation.compare import Method, compare
from timm_uscl.training.evaluation.run import evaluate_for_reproduction

SMOKE: dict[str, Any] = dict(budget="smoke", folds=[0], pretrained=False, max_items=3, progress=False)


def _probs(results: dict[str, Any], protocol: str) -> np.ndarray:
    runs = results["tasks"]["busi"]["protocols"][protocol]["folds"]
    return np.concatenate([np.array(r["predictions"]["final"]["prob"]) for r in runs])


def test_bf16_and_fp32_runs_are_close_but_recorded_different_and_never_paired(synthetic_root: Path) -> None:
    kwargs = dict(SMOKE, tasks=["busi"], data_root=synthetic_root)
    fp32 = evaluate("resnet18_uscl", precision="fp32", **kwargs)
    bf16 = evaluate("resnet18_uscl", precision="bf16", **kwargs)
    assert (fp32["config"]["precision"], bf16["config"]["precision"]) == ("fp32", "bf16")
    for protocol in ("finetune", "linear"):
        a, b = _probs(fp32, protocol), _probs(bf16, protocol)
        assert not np.array_equal(a, b)  # bf16 ran: the forwards rounded differently
        assert np.abs(a - b).max() < 0.1  # ... and measured the same thing
    with pytest.raises(EvaluationError, match=r"different precision \(\"bf16\" vs \"fp32\"\)") as e:
        compare([Method("random", "a.json", bf16), Method("uscl", "b.json", fp32)])
    assert "\n" not in str(e.value)


def test_auto_precision_is_resolved_before_it_is_recorded(synthetic_root: Path) -> None:
    results = evaluate("resnet18_uscl", tasks=["busi"], protocol="linear", data_root=synthetic_root, **SMOKE)
    assert results["config"]["precision"] in ("fp32", "bf16") and results["environment"]["precision"]


def test_an_unknown_precision_is_refused_in_one_line(synthetic_root: Path) -> None:
    with pytest.raises(EvaluationError, match="--precision fp16: give one of auto, fp32, bf16"):
        evaluate("resnet18_uscl", tasks=["busi"], data_root=synthetic_root, precision="fp16", **SMOKE)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int, int | None]]:
    """Record every unit the evaluation computes (not those it loads)."""
    calls: list[tuple[str, str, int, int | None]] = []
    for name, protocol in (("finetune_classifier", "finetune"), ("finetune_unet", "finetune")):
        real = getattr(run_module, name)

        def tune(backbone: Any, data: Any, fold: int, *rest: Any, _real: Any = real, _p: str = protocol) -> Any:
            calls.append((data.spec.name, _p, fold, rest[-1].seed))
            return _real(backbone, data, fold, *rest)

        monkeypatch.setattr(run_module, name, tune)
    real_probe = run_module.linear_probe

    def probe(features: Any, data: Any, fold: int, *rest: Any) -> Any:
        calls.append((data.spec.name, "linear", fold, None))
        return real_probe(features, data, fold, *rest)

    monkeypatch.setattr(run_module, "linear_probe", probe)
    return calls


def _unit(path: Path) -> tuple[str, str, int, int | None]:
    u = json.loads(path.read_text())["unit"]
    return u["task"], u["protocol"], u["fold"], u["seed"]


def test_a_killed_evaluation_resumes_computing_only_the_missing_units_and_writes_the_same_json(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counting(monkeypatch)
    out, work = tmp_path / "eval.json", tmp_path / "units"
    kwargs: dict[str, Any] = dict(budget="smoke", data_root=synthetic_root, random_init=True, max_items=2)
    evaluate_for_reproduction("resnet18_uscl", out, work_dir=work, **kwargs)
    whole = json.loads(out.read_text())
    units = sorted(work.glob("*.json"))
    assert len(units) == len(calls) == 40  # pocus and busi: 5 folds x (2 seeds + linear); busi_seg 5 x 2 seeds
    assert sorted(map(_unit, units), key=str) == sorted(calls, key=str)

    # killed after some units: no results file, the last units never written
    out.unlink()
    lost = units[::3]
    for path in lost:
        path.unlink()
    calls.clear()
    evaluate_for_reproduction("resnet18_uscl", out, work_dir=work, **kwargs)
    assert sorted(calls, key=str) == sorted(map(_unit_from_name, lost), key=str)
    resumed = json.loads(out.read_text())
    assert whole.pop("runtime_s").keys() == resumed.pop("runtime_s").keys()  # the one field a rerun may change
    assert resumed == whole


def _unit_from_name(path: Path) -> tuple[str, str, int, int | None]:
    task, protocol, fold, seed = path.name.removesuffix(".json").split(".")
    return task, protocol, int(fold.removeprefix("fold")), None if seed == "seedNone" else int(seed[4:])


def test_units_of_other_settings_are_refused_in_one_line_never_mixed(synthetic_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "units"
    kwargs: dict[str, Any] = dict(tasks=["busi"], protocol="linear", data_root=synthetic_root, work_dir=work, **SMOKE)
    evaluate("resnet18_uscl", precision="fp32", **kwargs)
    assert len(list(work.glob("*.json"))) == 1
    with pytest.raises(EvaluationError, match="a unit of another evaluation \\(its config differs\\)") as e:
        evaluate("resnet18_uscl", precision="bf16", **kwargs)
    assert "\n" not in str(e.value) and str(work) in str(e.value)
