"""Resumable evaluation: every finished unit (task, protocol, fold, seed) kept as a small strict-JSON file.

Why: one evaluation of the reproduction budget takes hours on a CPU, and a killed one used to start over. With a
``work_dir``, each unit's fold record is written (atomically) as soon as it finishes, and a rerun loads it instead
of recomputing it. Every unit file carries the settings it was computed under (the model's weights sha256, the
evaluation settings with the resolved precision, the items of every task, the code commit); a file of other
settings is refused in one line, never mixed into the results. A fold's numbers depend on its seed and fold alone
(:func:`.protocols._fold_seed`), so a loaded unit equals the one an uninterrupted run would compute.

A unit file: ``{"settings": {...}, "unit": {"task", "protocol", "fold", "seed"}, "run": <fold record>}``, named
``<task>.<protocol>.fold<F>.seed<S>.json`` (``seedNone`` for the deterministic linear probe).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from timm_uscl.outdir import write_text_atomic

from ..errors import EvaluationError
from .metrics import strict_json

__all__ = ["UnitStore"]

Run = dict[str, Any]


class UnitStore:
    """The finished units of one evaluation in ``work_dir`` (None: nothing kept, every unit computed)."""

    def __init__(self, work_dir: str | Path | None, settings: Mapping[str, Any]) -> None:
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

    def run(self, task: str, protocol: str, fold: int, seed: int | None, compute: Callable[[], Run]) -> Run:
        """The unit's fold record: loaded where a finished one is kept, else computed (and kept)."""
        path = self.path(task, protocol, fold, seed)
        if path is not None and path.is_file():
            return self._read(path)
        run = compute()
        if path is None:
            return run
        unit = {"task": task, "protocol": protocol, "fold": fold, "seed": seed}
        write_text_atomic(path, strict_json({"settings": self.settings, "unit": unit, "run": run}))
        self.computed.append(path.name)
        return json.loads(strict_json(run))  # as a loaded unit reads: the results do not depend on the resume
