"""Resumable evaluation: every finished unit (task, protocol, fold, seed) kept as a small strict-JSON file.

Why: one evaluation of the reproduction budget takes hours on a CPU, and a killed one used to start over. With a
``work_dir``, each unit's fold record is written (atomically) as soon as it finishes, and a rerun loads it instead
of recomputing it. Every unit file carries the settings it was computed under (the model's weights sha256, the
evaluation settings with the resolved precision, the items of every task, the code commit); a file of other
settings is refused in one line, never mixed into the results. A fold's numbers depend on its seed and fold alone
(:func:`.protocols._fold_seed`), so a loaded unit equals the one an uninterrupted run would compute.

A unit file: ``{"settings": {...}, "unit": {"task", "protocol", "fold", "seed"}, "run": <fold record>}``, named
``<task>.<protocol>.fold<F>.seed<S>.json`` (``seedNone`` for the deterministic linear probe).

Every unit, computed or loaded, is logged on one line with its scores and its count (``[k/N]``): a long
``--no-progress`` evaluation can be watched, and a number that goes wrong shows in the first fold, not at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from timm_uscl.outdir import write_text_atomic

from ..errors import EvaluationError
from .metrics import strict_json, unit_scores

__all__ = ["UnitStore"]

log = logging.getLogger(__name__)

Run = dict[str, Any]


class UnitStore:
    """The finished units of one evaluation in ``work_dir`` (None: nothing kept, every unit computed)."""

    def __init__(self, work_dir: str | Path | None, settings: Mapping[str, Any], *, planned: int = 0) -> None:
        self.planned = planned  # units this evaluation runs, for the "[k/N]" of each unit's log line
        self.finished = 0
        self.folder = None if work_dir is None else Path(work_dir).expanduser()
        # the settings as JSON would give them back (tuples as lists, NaN as null): what a unit file holds
        self.settings = json.loads(strict_json(dict(settings)))
        self.computed: list[str] = []  # unit file names computed by this run (the rest were loaded)
        if self.folder is not None:
            if not self.folder.parent.is_dir():
                raise EvaluationError(f"--work-dir {self.folder}: its folder does not exist; create it first")
            self.folder.mkdir(exist_ok=True)
            for path in sorted(self.folder.glob("*.json")):
                self._read(path)  # refuse another evaluation's units before anything runs

    def _read(self, path: Path) -> Run:
        try:
            record = json.loads(path.read_text())
            settings, run = record["settings"], record["run"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EvaluationError(f"{path}: not a unit file of timm-uscl evaluate ({e}); delete it") from e
        if settings != self.settings:
            key = next(k for k in sorted(set(settings) | set(self.settings)) if settings.get(k) != self.settings.get(k))
            raise EvaluationError(
                f"{path}: a unit of another evaluation (its {key} differs); use another --work-dir or empty this one"
            )
        return run

    def path(self, task: str, protocol: str, fold: int, seed: int | None) -> Path | None:
        return None if self.folder is None else self.folder / f"{task}.{protocol}.fold{fold}.seed{seed}.json"

    def done(self, task: str, protocol: str, fold: int, seed: int | None) -> bool:
        path = self.path(task, protocol, fold, seed)
        return path is not None and path.is_file()

    def run(
        self, task: str, protocol: str, fold: int, seed: int | None, compute: Callable[[], Run], *, reuse: bool = True
    ) -> Run:
        """The unit's fold record: loaded where a finished one is kept (and ``reuse``), else computed (and kept).
        Either way one log line names the unit and its scores, so that a ``--no-progress`` run can be watched."""
        path = self.path(task, protocol, fold, seed)
        start = time.perf_counter()
        if reuse and path is not None and path.is_file():
            run = self._read(path)
            how = f"kept in {self.folder}"
        else:
            run = compute()
            how = f"{time.perf_counter() - start:.1f}s"
            if path is not None:
                unit = {"task": task, "protocol": protocol, "fold": fold, "seed": seed}
                write_text_atomic(path, strict_json({"settings": self.settings, "unit": unit, "run": run}))
                self.computed.append(path.name)
                run = json.loads(strict_json(run))  # as a loaded unit reads: the results do not depend on the resume
        self.finished += 1
        count = f" [{self.finished}/{self.planned}]" if self.planned else ""
        name = f"{task} {protocol} fold {fold}" + ("" if seed is None else f" seed {seed}")
        log.info("%s%s: %s (%s)", name, count, unit_scores(run["metrics"]), how)
        return run
