"""The reproduction job: stages run once, in order; interrupted ones resume; other code or settings are refused."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from timm_uscl.training.reproduce import STAGES, Plan, ReproduceError, run_reproduction, status_lines

COMMIT = "a" * 40


def _plan(tmp_path: Path, **changes) -> Plan:
    return Plan(data_root=str(tmp_path / "data"), **changes)


def _runners(calls: list[tuple[str, bool]], fail: str | None = None):
    def run(call):
        stage, folder = call.stage, call.folder
        calls.append((stage.name, call.resume))
        folder.mkdir(parents=True, exist_ok=True)
        if stage.name == fail:
            raise RuntimeError("killed")
        return {"ok": stage.name}

    return {"pretrain": run, "evaluate": run, "table": run, "install": run}


def test_every_stage_runs_once_in_order_and_a_second_call_redoes_nothing(tmp_path):
    calls: list[tuple[str, bool]] = []
    ran = run_reproduction(tmp_path / "root", _plan(tmp_path), runners=_runners(calls), commit=COMMIT)
    assert ran == [s.name for s in STAGES]
    assert [name for name, _ in calls] == [s.name for s in STAGES]
    again: list[tuple[str, bool]] = []
    assert run_reproduction(tmp_path / "root", _plan(tmp_path), runners=_runners(again), commit=COMMIT) == []
    assert again == []
    record = json.loads((tmp_path / "root" / "stages" / "pretrain_uscl.json").read_text())
    assert record["status"] == "done" and record["commit"] == COMMIT and record["attempts"] == 1


def test_an_interrupted_stage_is_resumed_and_the_finished_ones_are_not_redone(tmp_path):
    calls: list[tuple[str, bool]] = []
    with pytest.raises(RuntimeError, match="killed"):
        run_reproduction(
            tmp_path / "root", _plan(tmp_path), runners=_runners(calls, fail="pretrain_simclr"), commit=COMMIT
        )
    assert [name for name, _ in calls] == ["pretrain_meta_uscl", "pretrain_uscl", "pretrain_simclr"]
    lines = "\n".join(status_lines(tmp_path / "root"))
    assert "done         pretrain_uscl" in lines and "interrupted  pretrain_simclr" in lines
    calls.clear()
    run_reproduction(tmp_path / "root", _plan(tmp_path), runners=_runners(calls), commit=COMMIT)
    assert calls[0] == ("pretrain_simclr", True)  # resumed, and nothing finished was run again
    assert "pretrain_uscl" not in [name for name, _ in calls]


def test_a_stage_started_by_another_commit_is_refused_rather_than_mixed_into_the_table(tmp_path):
    calls: list[tuple[str, bool]] = []
    with pytest.raises(RuntimeError):
        run_reproduction(
            tmp_path / "root", _plan(tmp_path), runners=_runners(calls, fail="pretrain_uscl"), commit=COMMIT
        )
    with pytest.raises(ReproduceError, match=r"pretrain_meta_uscl ran with commit aaaaaaaaaaaa.*git checkout"):
        run_reproduction(tmp_path / "root", _plan(tmp_path), runners=_runners(calls), commit="b" * 40)


def test_uncommitted_code_is_refused(tmp_path):
    with pytest.raises(ReproduceError, match="clean git checkout"):
        run_reproduction(tmp_path / "root", _plan(tmp_path), runners=_runners([]), commit=COMMIT + "-dirty")


def test_other_settings_in_the_same_root_are_refused_with_the_differences(tmp_path):
    run_reproduction(tmp_path / "root", _plan(tmp_path), runners=_runners([]), commit=COMMIT, stages=("pretrain_uscl",))
    with pytest.raises(ReproduceError, match=r"epochs 300 -> 20.*another --root"):
        run_reproduction(tmp_path / "root", _plan(tmp_path, epochs=20), runners=_runners([]), commit=COMMIT)


def test_a_setting_only_later_stages_use_may_change_before_they_start(tmp_path):
    root = tmp_path / "root"
    run_reproduction(root, _plan(tmp_path), runners=_runners([]), commit=COMMIT, stages=("pretrain",))
    calls: list[tuple[str, bool]] = []
    run_reproduction(root, _plan(tmp_path, eval_budget="cpu64"), runners=_runners(calls), commit=COMMIT)
    assert [name for name, _ in calls][0] == "evaluate_random"  # the pretraining is kept, the evaluations run
    with pytest.raises(ReproduceError, match=r"evaluate_random was done with other settings \(eval_budget"):
        run_reproduction(root, _plan(tmp_path, eval_budget="repro64"), runners=_runners([]), commit=COMMIT)


def test_status_of_an_empty_root_says_how_to_start(tmp_path):
    assert "no reproduction here yet" in status_lines(tmp_path / "nothing")[0]


def test_status_gives_an_eta_from_the_progress_of_a_started_pretraining(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(RuntimeError):
        run_reproduction(root, _plan(tmp_path), runners=_runners([], fail="pretrain_meta_uscl"), commit=COMMIT)
    folder = root / "pretrain_meta_uscl"
    (folder / "config.yaml").write_text("epochs: 10\n")
    lines = [json.dumps({"epoch": e, "step": 4 * e, "loss": 1.0}) for e in (1, 2)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    out = "\n".join(status_lines(root))
    assert "pretrain_meta_uscl" in out and "20 % done" in out and "work left" in out


def _hold(lock: Path) -> subprocess.Popen:
    """Another live process holding ``lock`` (as a second reproduction job holds its stage)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    code = f"""
        import fcntl, time
        h = open({str(lock)!r}, "a+")
        fcntl.flock(h, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(120)
        """
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_stage_held_by_another_job_is_left_to_it_and_its_dependents_wait_for_it(tmp_path):
    root = tmp_path / "root"
    holder = _hold(root / "stages" / "pretrain_uscl.lock")
    calls: list[tuple[str, bool]] = []
    try:
        with pytest.raises(RuntimeError, match="stop waiting"):  # the second pass would only wait: stop it there

            def no_wait(seconds):
                raise RuntimeError("stop waiting")

            import timm_uscl.training.reproduce as reproduce

            original, reproduce.time.sleep = reproduce.time.sleep, no_wait
            try:
                run_reproduction(root, _plan(tmp_path), runners=_runners(calls), commit=COMMIT, poll_s=0)
            finally:
                reproduce.time.sleep = original
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    names = [name for name, _ in calls]
    assert "pretrain_uscl" not in names and "evaluate_uscl" not in names and "table" not in names
    assert names == [
        "pretrain_meta_uscl",
        "pretrain_simclr",
        "evaluate_random",
        "evaluate_meta_uscl",
        "evaluate_simclr",
    ]
    calls.clear()
    run_reproduction(root, _plan(tmp_path), runners=_runners(calls), commit=COMMIT)  # the other job is gone
    assert [name for name, _ in calls] == ["pretrain_uscl", "evaluate_uscl", "table", "install"]


def test_a_killed_attempt_still_counts_its_wall_time_up_to_its_last_write(tmp_path):
    root = tmp_path / "root"
    with pytest.raises(RuntimeError):
        run_reproduction(root, _plan(tmp_path), runners=_runners([], fail="pretrain_meta_uscl"), commit=COMMIT)
    record_path = root / "stages" / "pretrain_meta_uscl.json"
    record = json.loads(record_path.read_text())
    record.update(wall_s=0.0, attempt_started=1000.0)  # as SIGKILL leaves it: no wall time written
    record_path.write_text(json.dumps(record))
    last = root / "pretrain_meta_uscl" / "last.pt"
    last.write_bytes(b"x")
    os.utime(last, (1600.0, 1600.0))
    for path in (root / "pretrain_meta_uscl").iterdir():
        os.utime(path, (1600.0, 1600.0))
    os.utime(root / "pretrain_meta_uscl", (1600.0, 1600.0))
    run_reproduction(root, _plan(tmp_path), runners=_runners([]), commit=COMMIT, stages=("pretrain_meta_uscl",))
    assert json.loads(record_path.read_text())["wall_s"] >= 600.0


def test_a_checkout_that_changes_while_a_stage_runs_leaves_that_stage_not_done(tmp_path, monkeypatch):
    import timm_uscl.training.reproduce as reproduce

    commits = iter(["a" * 40, "b" * 40])  # read at the stage's start, then again at its end
    monkeypatch.setattr(reproduce, "current_commit", lambda: next(commits))
    root = tmp_path / "root"
    with pytest.raises(ReproduceError, match=r"the code changed while it ran .*reproduce reset pretrain_uscl"):
        run_reproduction(root, _plan(tmp_path), runners=_runners([]), stages=("pretrain_uscl",))
    assert json.loads((root / "stages" / "pretrain_uscl.json").read_text())["status"] == "running"


def test_a_finished_run_this_record_did_not_start_is_refused_and_reset_forgets_the_stage(tmp_path):
    from timm_uscl.training.reproduce import STAGES, reset_stage

    root = tmp_path / "root"
    folder = root / "pretrain_uscl"
    (folder / "export").mkdir(parents=True)
    (folder / "summary.json").write_text('{"steps": 1, "epochs": 1}')
    from timm_uscl.training.reproduce import DEFAULT_RUNNERS

    runners = {**_runners([]), "pretrain": DEFAULT_RUNNERS["pretrain"]}
    with pytest.raises(ReproduceError, match=r"holds a finished run that this stage's record did not start"):
        run_reproduction(root, _plan(tmp_path), runners=runners, commit=COMMIT, stages=("pretrain_uscl",))
    removed = reset_stage(root, "pretrain_uscl")
    assert folder in removed and not folder.exists() and not (root / "stages" / "pretrain_uscl.json").exists()
    assert "pretrain_uscl" in {s.name for s in STAGES}


def test_the_install_stage_puts_each_backbones_results_on_its_card_and_installs_it_once(tmp_path, store):
    import timm
    import torch

    import timm_uscl
    from test_cards import RESULTS
    from timm_uscl.checksum import sha256_file
    from timm_uscl.store import find_installed
    from timm_uscl.training.reproduce import _STAGE, StageCall, _install_stage

    root = tmp_path / "root"
    for method in ("meta_uscl", "uscl", "simclr"):
        name = f"resnet18_uscl.pretrain_{method}"
        export = timm_uscl.export(timm.create_model("resnet18_uscl"), root / f"pretrain_{method}" / "export", name)
        (root / f"evaluate_{method}").mkdir(parents=True)
        results = {**RESULTS, "weights_sha256": sha256_file(export / "model.safetensors")}
        (root / f"evaluate_{method}" / "eval.json").write_text(json.dumps(results))
    call = StageCall(_STAGE["install"], _plan(tmp_path), root / "install", resume=False)
    done = _install_stage(call)
    assert sorted(done["installed"]) == [f"resnet18_uscl.pretrain_{m}" for m in ("meta_uscl", "simclr", "uscl")]
    found = find_installed("resnet18_uscl.pretrain_uscl")
    assert found is not None and "75.0" in (found.folder / "README.md").read_text()  # POCUS video accuracy
    assert _install_stage(call) == done  # again: the same weights are replaced, not refused
    torch.manual_seed(1)  # other weights under the same tag: a copy the stage must not replace
    other = timm_uscl.export(timm.create_model("resnet18_uscl"), tmp_path / "other", "resnet18_uscl.pretrain_uscl")
    timm_uscl.install(other, overwrite=True)
    card = (root / "pretrain_simclr" / "export" / "README.md").read_text()
    with pytest.raises(ReproduceError, match="installed from other weights .* is kept; run without this stage"):
        _install_stage(call)
    kept = find_installed("resnet18_uscl.pretrain_uscl")
    assert kept is not None and kept.sha256 == sha256_file(other / "model.safetensors")
    assert (root / "pretrain_simclr" / "export" / "README.md").read_text() == card  # nothing written before refusing
    (root / "evaluate_uscl" / "eval.json").write_text("{cut")
    with pytest.raises(ReproduceError, match="evaluate_uscl/eval.json: cannot be read .*reproduce reset evaluate_uscl"):
        _install_stage(call)


def test_the_plan_names_each_backbone_by_what_it_is(tmp_path):
    plan = _plan(tmp_path)
    tag = plan.export_tag("meta_uscl")
    assert tag == "meta_uscl-covid_blues-300ep-64px"
    assert plan.pretrain_overrides("meta_uscl", tmp_path / "run")["export_tag"] == tag
    from timm_uscl.names import check_user_tag

    check_user_tag(tag, "export_tag")  # a valid user tag


def test_a_second_call_with_other_settings_is_refused_while_a_job_runs_on_the_root(tmp_path, monkeypatch):
    from timm_uscl.training import reproduce

    root = tmp_path / "root"
    run_reproduction(root, _plan(tmp_path), stages=("pretrain_uscl",), runners=_runners([]), commit=COMMIT)
    monkeypatch.setattr(reproduce.Root, "live", lambda self: True)  # as if the first job still held a stage
    # eval_budget: a setting no started stage used, so only the running job's plan can refuse it
    with pytest.raises(ReproduceError, match="a job running on this root now has other settings .*eval_budget"):
        run_reproduction(root, _plan(tmp_path, eval_budget="smoke"), stages=("evaluate_random",), runners=_runners([]))
    assert json.loads((root / "plan.json").read_text())["eval_budget"] == "repro64"  # the running job's plan stays


def test_a_stage_does_not_start_when_another_call_replaced_the_plan_after_this_job_checked_it(tmp_path, monkeypatch):
    from timm_uscl.training import reproduce

    check = reproduce.Root.check_plan

    def racing(self, plan):  # this job's check passes, then another call records its own plan
        check(self, plan)
        (self.path / "plan.json").write_text(json.dumps({**dataclasses.asdict(plan), "online_every": 5}))

    monkeypatch.setattr(reproduce.Root, "check_plan", racing)
    calls: list[tuple[str, bool]] = []
    with pytest.raises(ReproduceError, match="another call changed this root's plan .*online_every 5 -> 25"):
        run_reproduction(tmp_path / "root", _plan(tmp_path), runners=_runners(calls), commit=COMMIT)
    assert calls == []
