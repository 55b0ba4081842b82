"""Reading a task's ``metadata.csv`` strictly: every refusal is one line naming the file (and line) and the fix.

Why strict: a lenient reader turns bad metadata into wrong numbers without a word. A label typo (``COVID``,
``covid ``) silently dropped a video; a fold value of 7 made that video training data for every test fold; a
``file_name`` of ``../x`` or ``/etc/passwd`` read files outside the data folder. Here each of those stops the run
before any decoding, naming what to fix.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.folders import inside as data_inside
from ..errors import DataError, EvaluationError

__all__ = ["Row", "Columns", "read_metadata", "inside", "parse_fold", "unknown_labels", "check_classes", "fold_range"]

Row = tuple[int, dict[str, str]]
"""A metadata row with its line number in the file (the header is line 1)."""


@dataclass(frozen=True)
class Columns:
    """Which columns of a metadata.csv hold what. ``values`` are the accepted label strings (class = position);
    ``group=None`` makes every file its own group; ``fold=None`` leaves folds to be assigned (``fold=-1``)."""

    values: tuple[str, ...]
    label: str | None = "label"
    file: str = "file_name"
    group: str | None = None
    group_prefix: str = ""
    fold: str | None = "fold"
    mask: str | None = None
    extra: tuple[str, ...] = ()  # columns that ``include`` reads
    include: Callable[[Mapping[str, str]], bool] | None = None  # rows of the evaluation set

    @property
    def required(self) -> list[str]:
        return [c for c in (self.file, self.label, self.group, self.fold, self.mask, *self.extra) if c]


def fold_range(folds: Sequence[int]) -> str:
    """``0-4`` for contiguous folds, else the list."""
    f = sorted(folds)
    return f"{f[0]}-{f[-1]}" if f == list(range(f[0], f[-1] + 1)) else ", ".join(map(str, f))


def read_metadata(path: Path, required: Sequence[str]) -> list[Row]:
    """The rows of a UTF-8 CSV with their line numbers; missing columns, short rows or bad bytes are refused."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not a column name
    except UnicodeDecodeError as err:
        raise EvaluationError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None
    try:
        reader = csv.DictReader(text.splitlines())
        header = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as err:
        raise EvaluationError(f"{path}: not a readable CSV ({err}); fix the file") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise EvaluationError(f"{path}: missing columns {missing} (it has {header}); add them to the header row")
    out: list[Row] = []
    for i, row in enumerate(rows):
        line = i + 2  # the header is line 1 (a quoted field spanning lines would shift this; metadata has none)
        if None in row.values() or None in row:
            raise EvaluationError(f"{path} line {line}: its field count differs from the header's; fix that row")
        out.append((line, row))
    return out


def inside(base: Path, name: str, where: str) -> Path:
    """``base/name``, refused unless it stays inside ``base`` once ``..`` and symlinks are resolved (L9): the rule
    pretraining applies (:func:`timm_uscl.training.data.folders.inside`), raised as an evaluation error."""
    try:
        return data_inside(base, name, where)
    except DataError as err:
        raise EvaluationError(str(err)) from None


def parse_fold(value: str, folds: Sequence[int] | None, where: str, column: str = "fold") -> int:
    """A fold number; refused unless it is an integer among ``folds`` (when the task has fixed folds)."""
    try:
        fold = int(value.strip())
    except ValueError:
        raise EvaluationError(f"{where}: {column} {value!r} is not an integer; give the fold number") from None
    if folds is not None and fold not in folds:
        raise EvaluationError(
            f"{where}: fold {fold} is outside the task's folds {fold_range(folds)}; a row with another fold would "
            "be training data for every test fold, so fix the value"
        )
    if fold < 0:
        raise EvaluationError(f"{where}: fold {fold} is negative; folds are numbered from 0")
    return fold


def unknown_labels(path: Path, column: str | None, unknown: Mapping[str, int], known: Sequence[str]) -> None:
    """Refuse every unknown label at once, each distinct value with its first line: typos are never dropped."""
    if unknown:
        listed = ", ".join(f"{v!r} (line {line})" for v, line in list(unknown.items())[:8])
        raise EvaluationError(
            f"{path}: unknown labels in column {column!r}: {listed}; the known labels are {', '.join(known)}: "
            "fix the typos"
        )


def check_classes(labels: Iterable[int], classes: Sequence[str], where: Path | str) -> None:
    """A classification task needs two classes at least, or every score is trivially perfect."""
    present = sorted(set(labels))
    if len(present) < 2:
        only = classes[present[0]] if present else "none"
        raise EvaluationError(
            f"{where}: every item has one class ({only!r}); a classification task needs two classes at least"
        )
