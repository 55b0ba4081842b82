"""The paper-budget comparison as one resumable job: pretrain Meta-USCL, USCL and SimCLR on the same videos, evaluate
them and a random-init backbone on the same folds and seeds, print the paired comparison, and install the three
backbones in the local weights store with their measured results on their cards (the ``install`` stage).

Why a job runner and not a shell loop: at the paper's budget the work takes hours on a CPU, longer than one sitting,
and a table is only worth something when every row was made by the same code with the same settings. So:

* **One run root** outside any work tree (``~/.cache/timm-uscl/repro`` by default, ``--root`` or
  ``$TIMM_USCL_REPRO``): ``plan.json`` (the settings), one folder per stage, and ``stages/<stage>.json`` (its
  record: status, commit, settings, wall time, attempts).
* **Idempotent stages**, in :data:`STAGES` order: a finished stage is skipped; an interrupted one (SIGKILL
  included) resumes, a pretraining stage from its ``last.pt``; a stage whose settings differ from the plan is
  refused.
* **Never two codes in one table.** Every stage records the commit it ran with. A stage is refused when the code
  differs from the commit its kind (pretraining, evaluation) was started with, or when the work tree is dirty; the
  table prints the commits it was made from. To continue a table with newer code, check out the recorded commit (or
  start a new root).
* **status** prints each stage (done, running, interrupted, left) with wall times and an ETA; a stage's ETA comes
  from its own progress when it has started, else from a finished stage of the same kind, else from
  :data:`ESTIMATE_S` (stated as such).
* ``precision: auto`` is resolved once, in the plan, so every stage computes in the same precision.
* The ``install`` stage is the only one that writes outside the run root: the local weights store
  (``$TIMM_USCL_WEIGHTS``), where ``timm.create_model("resnet18_uscl.<tag>", pretrained=True)`` finds the weights.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import USCLError

__all__ = [
    "ReproduceError",
    "Plan",
    "Stage",
    "STAGES",
    "DEFAULT_ROOT",
    "run_reproduction",
    "status_lines",
    "reset_stage",
    "elapsed_s",
]

log = logging.getLogger(__name__)

DEFAULT_ROOT = "~/.cache/timm-uscl/repro"


class ReproduceError(USCLError):
    """The reproduction cannot go on as asked (another commit, other settings, a live job, a full disk)."""


@dataclass(frozen=True)
class Stage:
    """One step of the job: ``kind`` pretrain / evaluate / table / install; ``method`` the preset or ``random``;
    ``needs`` the stages that must be done first."""

    name: str
    kind: str
    method: str
    needs: tuple[str, ...] = ()


METHODS = ("meta_uscl", "uscl", "simclr")
STAGES = (
    *(Stage(f"pretrain_{m}", "pretrain", m) for m in METHODS),
    Stage("evaluate_random", "evaluate", "random"),
    *(Stage(f"evaluate_{m}", "evaluate", m, needs=(f"pretrain_{m}",)) for m in METHODS),
    Stage("table", "table", "", needs=("evaluate_random", *(f"evaluate_{m}" for m in METHODS))),
    Stage("install", "install", "", needs=tuple(f"evaluate_{m}" for m in METHODS)),
)
ESTIMATE_S = {"pretrain_meta_uscl": 3600.0, "pretrain": 1200.0, "evaluate": 1800.0, "table": 5.0, "install": 10.0}
"""Fallback ETAs (seconds) on a 2-core CPU with bf16, used only until a stage of that kind has timings."""


@dataclass(frozen=True)
class Plan:
    """What the whole table is made with; written to ``plan.json`` once and compared on every later call."""

    data_root: str
    pretrain_data: str = "covid_blues"
    epochs: int = 300
    image_size: int = 64
    precision: str = "auto"
    device: str = "cpu"
    online_eval: str | None = "pocus"
    online_every: int = 25
    eval_budget: str = "repro64"  # a named evaluation budget (timm_uscl.training.evaluation.config.BUDGETS)

    def settings(self, kind: str) -> dict[str, Any]:
        """The plan's fields that decide what a stage of ``kind`` computes (what must match to continue it)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k in PLAN_FIELDS[kind]}

    def export_tag(self, method: str) -> str:
        """The tag a method's backbone is exported and installed under: what it is, not where it ran, e.g.
        ``meta_uscl-covid_blues-300ep-64px`` (two tables of the same plan share it: the install stage refuses to
        replace the other's weights)."""
        return f"{method}-{self.pretrain_data}-{self.epochs}ep-{self.image_size}px".lower()

    def pretrain_overrides(self, method: str, out_dir: Path) -> dict[str, Any]:
        overrides: dict[str, Any] = {
            "source": str(Path(self.data_root) / self.pretrain_data),
            "out_dir": str(out_dir),
            "export_tag": self.export_tag(method),
            "epochs": self.epochs,
            "image_size": self.image_size,
            "precision": self.precision,
            "device": self.device,
        }
        if self.online_eval:
            overrides.update(
                online_eval=self.online_eval, online_every=self.online_every, online_data_root=self.data_root
            )
        return overrides


PLAN_FIELDS = {
    "pretrain": {"data_root", "pretrain_data", "epochs", "image_size", "precision", "device", "online_eval"}
    | {"online_every"},
    "evaluate": {"data_root", "image_size", "precision", "device", "eval_budget"},
    "table": {"eval_budget"},
    "install": {"eval_budget"},
}
"""Which plan fields each kind of stage depends on: a stage is refused only when one of ITS fields changed."""


@dataclass
class Record:
    """``stages/<name>.json``: what happened to one stage."""

    status: str = "left"  # left | running | done
    commit: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    wall_s: float = 0.0  # summed over attempts
    started: float | None = None
    attempt_started: float | None = None  # wall clock of the attempt now running (status adds it to wall_s)
    finished: float | None = None
    result: dict[str, Any] = field(default_factory=dict)


class Root:
    """The run root's files (module docstring); every write is atomic and a full disk is one line."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()

    def stage_dir(self, stage: Stage) -> Path:
        return self.path / stage.name

    def record_path(self, stage: Stage) -> Path:
        return self.path / "stages" / f"{stage.name}.json"

    def read(self, stage: Stage) -> Record:
        path = self.record_path(stage)
        if not path.is_file():
            return Record()
        try:
            return Record(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:
            raise ReproduceError(
                f"{path}: not a stage record ({err}); `timm-uscl reproduce reset {stage.name}` to redo the stage"
            ) from None

    def write(self, stage: Stage, record: Record) -> None:
        self._atomic(self.record_path(stage), json.dumps(dataclasses.asdict(record), indent=2, allow_nan=False))

    def _atomic(self, path: Path, text: str) -> None:
        """Write ``path`` whole or not at all; a temporary name of its own per call, so concurrent jobs never move
        each other's half-written file."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text + "\n")
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno == errno.ENOSPC:
                raise ReproduceError(f"{path.parent}: the disk is full; free space and run the command again") from None
            raise ReproduceError(f"{path}: cannot be written ({err.strerror or err})") from None

    def check_plan(self, plan: Plan) -> None:
        """Refuse a plan that changes what a started or finished stage computed (its kind's :data:`PLAN_FIELDS`), or
        that differs at all from the plan of a job that is running on this root now; ``plan.json`` then records the
        plan of the latest call. Held under the root's lock, so two calls cannot both pass against the same state."""
        with self.root_lock():
            self._check_plan(plan)

    @contextmanager
    def root_lock(self) -> Iterator[None]:
        """The whole root, for the short checks and writes of ``plan.json`` (blocking: they take milliseconds)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "plan.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_plan(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.path / "plan.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _check_plan(self, plan: Plan) -> None:
        recorded = self.read_plan()
        if recorded is not None and recorded != dataclasses.asdict(plan) and self.live():
            raise ReproduceError(
                f"{self.path / 'plan.json'}: a job running on this root now has other settings "
                f"({_diff(recorded, plan)}); wait for it to finish, run with its settings, or pick another --root"
            )
        for stage in STAGES:
            record = self.read(stage)
            if record.status == "left":
                continue
            saved = {k: v for k, v in record.settings.items() if k in PLAN_FIELDS[stage.kind]}
            if saved != plan.settings(stage.kind):
                raise ReproduceError(
                    f"{self.record_path(stage)}: {stage.name} was {record.status} with other settings "
                    f"({_diff(saved, plan, stage.kind)}); run with the same settings or pick another --root"
                )
        self._atomic(self.path / "plan.json", json.dumps(dataclasses.asdict(plan), indent=2))

    @contextmanager
    def stage_lock(self, stage: Stage) -> Iterator[bool]:
        """Hold ``stage`` for this process (True), or learn that another live process holds it (False)."""
        path = self.path / "stages" / f"{stage.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held while the stage runs
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()

    def held_elsewhere(self, stage: Stage) -> bool:
        """Whether another live process runs ``stage`` now."""
        path = self.path / "stages" / f"{stage.name}.lock"
        if not path.exists():
            return False
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def live(self) -> bool:
        """Whether any stage is being run by a live process now."""
        return any(self.held_elsewhere(stage) for stage in STAGES)


def _diff(saved: dict[str, Any], plan: Plan, kind: str | None = None) -> str:
    """``field old -> new; ...`` between recorded settings and ``plan`` (its fields of ``kind``, or all)."""
    wanted = plan.settings(kind) if kind else dataclasses.asdict(plan)
    keys = sorted(set(saved) | set(wanted))
    return "; ".join(f"{k} {saved.get(k)!r} -> {wanted.get(k)!r}" for k in keys if saved.get(k) != wanted.get(k))


def current_commit() -> str | None:
    from .provenance import git_commit

    return git_commit()


def _check_commit(root: Root, stage: Stage, record: Record, commit: str | None) -> None:
    """Refuse code that differs from what this stage, or its kind's other stages, ran with (module docstring)."""
    if commit is None or commit.endswith("-dirty"):
        raise ReproduceError(
            f"{stage.name}: the code's commit is {'unknown' if commit is None else commit} (a table is made by one "
            "committed version): run from a clean git checkout of timm-uscl"
        )
    for other in STAGES:
        seen = record if other == stage else root.read(other)
        if other.kind == stage.kind and seen.commit is not None and seen.commit != commit:
            raise ReproduceError(
                f"{root.stage_dir(other)}: {other.name} ran with commit {seen.commit[:12]}, this code is "
                f"{commit[:12]}; one table is made by one code: `git checkout {seen.commit[:12]}` to continue it, or "
                f"pick another --root"
            )


@dataclass(frozen=True)
class StageCall:
    """What a stage runner gets: the stage, the plan, its folder, whether an earlier attempt exists, and how to
    execute (CPU threads; not part of the plan: it changes how fast, not what is computed)."""

    stage: Stage
    plan: Plan
    folder: Path
    resume: bool
    threads: int = 0


StageRunner = Callable[[StageCall], dict[str, Any]]


def _recovered_wall(root: Root, stage: Stage, record: Record) -> float:
    """An attempt killed before it could record its wall time: the time from its start to the stage folder's last
    write (a checkpoint or a metrics line), so the stage's wall time still counts it."""
    if record.status != "running" or record.attempt_started is None or not root.stage_dir(stage).is_dir():
        return 0.0
    stamps = [p.stat().st_mtime for p in root.stage_dir(stage).rglob("*") if p.is_file()]
    return max(0.0, max(stamps, default=record.attempt_started) - record.attempt_started)


def elapsed_s(root: Root, stage: Stage, record: Record) -> float:
    """A stage's wall time so far: its recorded attempts, plus the attempt running now in a live job, or a killed
    attempt's time up to its last write."""
    wall = record.wall_s
    if record.status == "running":
        if root.held_elsewhere(stage) and record.attempt_started:
            wall += time.time() - record.attempt_started
        else:
            wall += _recovered_wall(root, stage, record)
    return wall


def _run_stage(
    root: Root, stage: Stage, plan: Plan, runner: StageRunner, *, commit_fn: Callable[[], str | None], threads: int
) -> None:
    """One attempt at ``stage``; the code's commit is read at its start and again at its end (a job runs for hours,
    and its stages import their code only when they start)."""
    commit = commit_fn()
    record = root.read(stage)
    _check_commit(root, stage, record, commit)
    with root.root_lock():  # another call may have replaced plan.json since this job checked it
        recorded = root.read_plan()
        if recorded != dataclasses.asdict(plan):
            raise ReproduceError(
                f"{root.path / 'plan.json'}: another call changed this root's plan ({_diff(recorded or {}, plan)}) "
                f"before {stage.name} started; run one job per root, with one set of settings"
            )
    resume = record.attempts > 0
    record = dataclasses.replace(
        record,
        status="running",
        commit=commit,
        settings=dataclasses.asdict(plan),
        attempts=record.attempts + 1,
        wall_s=record.wall_s + _recovered_wall(root, stage, record),
    )
    record.started = record.started or time.time()
    record.attempt_started = time.time()
    root.write(stage, record)
    log.info("reproduce: %s %s (attempt %d)", "resuming" if resume else "starting", stage.name, record.attempts)
    start = time.monotonic()
    try:
        result = runner(StageCall(stage, plan, root.stage_dir(stage), resume, threads))
    finally:
        record.wall_s += time.monotonic() - start
        record.attempt_started = None
        root.write(stage, record)
    now = commit_fn()
    if now != commit:  # the checkout changed under the job: this stage ran (partly) other code
        raise ReproduceError(
            f"{stage.name}: the code changed while it ran (commit {commit} at its start, {now} now); it is "
            f"not counted as done: restore commit {commit}, or `timm-uscl reproduce reset {stage.name}` and rerun"
        )
    record.status, record.finished, record.result = "done", time.time(), result
    root.write(stage, record)
    log.info("reproduce: %s done in %s", stage.name, _minutes(record.wall_s))


def _one_pass(
    root: Root,
    wanted: list[Stage],
    plan: Plan,
    runners: dict[str, StageRunner],
    *,
    commit_fn: Callable[[], str | None],
    threads: int,
) -> tuple[list[str], list[str]]:
    """Every wanted stage that is free and ready, once, in order: (stages run, stages waiting on another process)."""
    ran, waiting = [], []
    for stage in wanted:
        if root.read(stage).status == "done":
            continue
        with root.stage_lock(stage) as held:
            if not held:
                log.info("reproduce: %s is running in another process; skipped", stage.name)
                waiting.append(stage.name)
                continue
            if root.read(stage).status == "done":  # finished by another process meanwhile
                continue
            missing = [n for n in stage.needs if root.read(_STAGE[n]).status != "done"]
            if missing:
                if any(root.held_elsewhere(_STAGE[n]) for n in missing):
                    waiting.append(stage.name)
                log.info("reproduce: %s waits for %s", stage.name, ", ".join(missing))
                continue
            _run_stage(root, stage, plan, runners[stage.kind], commit_fn=commit_fn, threads=threads)
            ran.append(stage.name)
    return ran, waiting


def run_reproduction(
    root_path: str | os.PathLike,
    plan: Plan,
    *,
    stages: tuple[str, ...] | None = None,
    runners: dict[str, StageRunner] | None = None,
    commit: str | None = None,
    threads: int = 0,
    poll_s: float = 30.0,
) -> list[str]:
    """Run every stage left (or those named in ``stages``), in order; returns the names of the stages this process
    ran. Several processes may work on one root at once (``--jobs``): each stage is held by one of them (a lock
    file), the others skip it and go on, and come back for stages that waited on it.

    ``runners`` (kind -> callable) and ``commit`` (a fixed commit) replace the real ones in tests."""
    root = Root(root_path)
    runners = {**DEFAULT_RUNNERS, **(runners or {})}
    commit_fn = current_commit if commit is None else (lambda: commit)
    unknown = set(stages or ()) - {s.name for s in STAGES} - {s.kind for s in STAGES}
    if unknown:
        raise ReproduceError(
            f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(s.name for s in STAGES)}"
        )
    wanted = [s for s in STAGES if stages is None or s.name in stages or s.kind in stages]
    root.check_plan(plan)
    ran: list[str] = []
    while True:
        done_now, waiting = _one_pass(root, wanted, plan, runners, commit_fn=commit_fn, threads=threads)
        ran += done_now
        if not waiting:
            return ran
        if not done_now:  # everything left waits on other processes: wait for them
            time.sleep(poll_s)


# -------------------------------------------------------------------------------------------------- the stages


def _pretrain_stage(call: StageCall) -> dict[str, Any]:
    from .config import load_config
    from .engine import pretrain

    stage, plan, folder = call.stage, call.plan, call.folder
    summary = folder / "summary.json"
    if summary.is_file() and (folder / "export").is_dir():
        if not call.resume:  # a run this record never started: from another plan, or a reset that kept files
            raise ReproduceError(
                f"{folder} holds a finished run that this stage's record did not start; "
                f"`timm-uscl reproduce reset {stage.name}` removes it, then rerun"
            )
        try:  # finished, killed before its record said so
            done = json.loads(summary.read_text())
            return {"export": str(folder / "export"), "steps": done["steps"], "epochs": done["epochs"]}
        except (ValueError, KeyError):
            pass  # a summary cut short by a kill: the resumed run rewrites it
    overrides = {**plan.pretrain_overrides(stage.method, folder), "threads": call.threads}
    config = load_config(stage.method, overrides=overrides)
    result = pretrain(config, resume=True, progress=False)  # resume: from last.pt when there is one, else fresh
    return {"export": str(result.export_dir), "steps": result.steps, "epochs": result.epochs}


def _evaluate_stage(call: StageCall) -> dict[str, Any]:
    """``evaluate_for_reproduction`` of one method's export (or of random init) under the plan's budget; its
    finished units (task, protocol, fold, seed) are kept in the stage folder, so a killed evaluation continues."""
    import torch

    from .evaluation.run import evaluate_for_reproduction

    stage, plan, folder = call.stage, call.plan, call.folder
    if call.threads:
        torch.set_num_threads(call.threads)
    root = folder.parent
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "eval.json"
    if stage.method == "random":
        model, card = "resnet18_uscl", None
    else:
        export = root / f"pretrain_{stage.method}" / "export"
        model, card = f"local-dir:{export}", export
    evaluate_for_reproduction(
        model,
        out,
        budget=plan.eval_budget,
        data_root=plan.data_root,
        random_init=stage.method == "random",
        init="torchvision",
        device=plan.device,
        precision=plan.precision,
        task_cache=root / "task_cache",
        work_dir=folder / "units",
        card_export=card,
    )
    return {"eval_json": str(out)}


def _table_stage(call: StageCall) -> dict[str, Any]:
    """The paired comparison (every method minus random init, Meta-USCL minus USCL and SimCLR; both scorings) of
    the four evaluations, refused by ``compare`` if they cannot be paired; written as table.md."""
    from timm_uscl.outdir import write_text_atomic

    from .evaluation.compare import compare, comparison_markdown, load_method

    folder = call.folder
    root = folder.parent
    folder.mkdir(parents=True, exist_ok=True)
    commits = {s.kind: Root(root).read(s).commit for s in STAGES if s.kind in ("pretrain", "evaluate")}
    methods = [load_method(root / s.name / "eval.json", s.method) for s in STAGES if s.kind == "evaluate"]
    comparison = compare(methods, baseline="random")
    header = (
        f"Pretraining commit {commits.get('pretrain')}, evaluation commit {commits.get('evaluate')}; plan "
        f"{json.dumps(dataclasses.asdict(call.plan))}.\n\n"
    )
    write_text_atomic(folder / "table.md", header + comparison_markdown(comparison))
    print(header + comparison_markdown(comparison))
    return {"table": str(folder / "table.md")}


def _install_stage(call: StageCall) -> dict[str, Any]:
    """Each pretrained backbone's measured results written into its export's card (the results are refused unless
    measured on that export's weights), then the export installed in the local weights store (``timm-uscl
    install``; ``$TIMM_USCL_WEIGHTS``, outside the run root) under its own tag: loadable offline by
    ``timm.create_model``, never published (the pretraining data's licence is no-derivatives). A copy installed from
    these very weights is replaced (its card is refreshed); a tag installed from other weights (another table's) is
    refused before anything is written."""
    from timm_uscl.export_folder import check_export, update_card
    from timm_uscl.record import RECORD_KEY
    from timm_uscl.store import add, find_installed

    from .evaluation.metrics import card_results

    root = call.folder.parent
    exports = {}
    for method in METHODS:  # every check first: a refused install leaves no card or store changed
        export, evaluation = root / f"pretrain_{method}" / "export", root / f"evaluate_{method}" / "eval.json"
        try:
            results = json.loads(evaluation.read_text())
            block = check_export(export)[RECORD_KEY]
        except (OSError, ValueError, USCLError) as err:
            raise ReproduceError(
                f"{evaluation if not isinstance(err, USCLError) else export}: cannot be read ({err}); "
                f"`timm-uscl reproduce reset evaluate_{method}` (or pretrain_{method}) and rerun"
            ) from None
        if results.get("weights_sha256") != block["sha256"]:
            raise ReproduceError(
                f"{evaluation}: measured on other weights than {export}; `timm-uscl reproduce reset "
                f"evaluate_{method}` and rerun"
            )
        found = find_installed(block["name"])
        if found is not None and found.sha256 != block["sha256"]:
            raise ReproduceError(
                f"{found.folder}: {block['name']} is installed from other weights (another table's?) and is kept; "
                f"run without this stage (`--stages pretrain evaluate table`), or remove that copy to install these"
            )
        exports[method] = (export, results, found is not None)
    installed = {}
    for export, results, replace in exports.values():
        update_card(export, card_results(results), measured_sha256=results["weights_sha256"])
        folder = add(export, overwrite=replace)
        installed[folder.name] = str(folder)
    return {"installed": installed}


_STAGE = {stage.name: stage for stage in STAGES}

DEFAULT_RUNNERS: dict[str, StageRunner] = {
    "pretrain": _pretrain_stage,
    "evaluate": _evaluate_stage,
    "table": _table_stage,
    "install": _install_stage,
}


# -------------------------------------------------------------------------------------------------- status


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _progress(folder: Path) -> float | None:
    """The fraction of a pretraining stage done, from its metrics.jsonl and config.yaml."""
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        return None
    from .monitor import read_records

    records = [r for r in read_records(metrics) if "step" in r and "epoch" in r and "loss" in r]
    config = folder / "config.yaml"
    if len(records) < 2 or not config.is_file():
        return None
    import yaml

    epochs = yaml.safe_load(config.read_text()).get("epochs", 0) or 0
    last = records[-1]
    steps_per_epoch = max(r["step"] for r in records if r["epoch"] == last["epoch"]) / max(last["epoch"], 1)
    total = steps_per_epoch * epochs
    if total <= 0:
        return None
    return min(last["step"] / total, 1.0)


def status_lines(root_path: str | os.PathLike) -> list[str]:
    """What ``timm-uscl reproduce status`` prints: one line per stage, then the total ETA."""
    root = Root(root_path)
    if not (root.path / "plan.json").is_file():
        return [f"{root.path}: no reproduction here yet (run `timm-uscl reproduce --root {root.path}`)"]
    live = root.live()
    try:
        plan = json.loads((root.path / "plan.json").read_text())
    except ValueError:
        plan = "(plan.json unreadable)"
    lines = [f"{root.path}: {'running now' if live else 'not running'}; plan {json.dumps(plan)}"]
    per_kind: dict[str, float] = {}
    for stage in STAGES:
        record = root.read(stage)
        if record.status == "done":
            per_kind.setdefault(stage.name if stage.name in ESTIMATE_S else stage.kind, record.wall_s)
    left_s = 0.0
    for stage in STAGES:
        record = root.read(stage)
        key = stage.name if stage.name in ESTIMATE_S else stage.kind
        expected, how = per_kind.get(key), "like its finished kind"
        if expected is None:  # scaled by the plan's epochs where a pretraining's default assumes 300
            scale = plan.get("epochs", 300) / 300 if isinstance(plan, dict) and stage.kind == "pretrain" else 1.0
            expected, how = ESTIMATE_S[key] * scale, "a default estimate"
        commit = (record.commit or "")[:12]
        if record.status == "done":
            lines.append(f"  done         {stage.name:22s} {_minutes(record.wall_s):>10s}  commit {commit}")
            continue
        fraction = _progress(root.stage_dir(stage)) if stage.kind == "pretrain" else None
        running = record.status == "running" and root.held_elsewhere(stage)  # this stage's own job, alive
        wall = elapsed_s(root, stage, record)
        if record.attempts and fraction:
            remaining = wall * (1 - fraction) / fraction if wall else expected * (1 - fraction)
            how = f"{100 * fraction:.0f} % done after {_minutes(wall)}"
        else:
            remaining = expected
        left_s += remaining
        state = ("running" if running else "interrupted") if record.status == "running" else "left"
        lines.append(f"  {state:12s} {stage.name:22s} ETA {_minutes(remaining):>8s} ({how})  commit {commit or '-'}")
    lines.append(f"  work left: about {_minutes(left_s)} of one job (less in wall time with --jobs)")
    return lines


def reset_stage(root_path: str | os.PathLike, name: str) -> list[Path]:
    """Forget one stage: its record and its folder are removed (returned), so the next run does it again from
    scratch. Refused while a live job holds it."""
    root = Root(root_path)
    if name not in _STAGE:
        raise ReproduceError(f"unknown stage {name!r}; choose from {', '.join(_STAGE)}")
    stage = _STAGE[name]
    with root.stage_lock(stage) as held:
        if not held:
            raise ReproduceError(f"{name} is running in a live job; stop that job first")
        removed = [p for p in (root.record_path(stage), root.stage_dir(stage)) if p.exists()]
        for path in removed:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    return removed
