"""A run folder belongs to one run: nothing in it is replaced by accident, and two live runs never share it.

Why: the default ``--out`` is ``runs/<preset>``, so running ``timm-uscl pretrain`` twice used to replace a finished
run (its checkpoint and export, mixing both runs' metrics and leaving the first run's CMW-Net in the new export),
and two runs started into one folder both "succeeded". :func:`claim_run_folder` is the rule, applied before anything
is written:

* the folder is locked for the run's lifetime (``.lock``, an OS-level ``flock`` that dies with the process, even
  under SIGKILL, so a crash never leaves a stale lock); a second live run is refused with the holder's pid;
* a folder that already holds a run is refused unless the call says what to do with it: ``resume=True`` continues
  it from ``last.pt`` (see :func:`check_resume_config`), ``overwrite=True`` removes exactly the run's files (listed in
  the log first) and starts over. A run is recognised by its marker (``.timm-uscl-run``, written when the folder is
  claimed) or its ``last.pt`` / ``summary.json``: files that merely bear a run file's name (a user's own
  ``config.yaml`` or ``export/``) are never removed, the folder is refused instead;
* an attempt that wrote no checkpoint and did not finish (it failed at its start) is started afresh by ``--resume``;
* partial checkpoint files of a killed run (``.last.pt.*.tmp``) are removed: the lock proves their writer is dead.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .checkpoint import CHECKPOINT_NAME
from .config import TrainConfig, flat_config
from .errors import RunFolderError

__all__ = ["RUN_FILES", "RESUMABLE_KEYS", "RECORDED_KEYS", "RunFolder", "claim_run_folder", "check_resume_config"]

log = logging.getLogger(__name__)

RUN_FILES = (CHECKPOINT_NAME, "config.yaml", "metrics.jsonl", "summary.json", "plots", "export", "tensorboard")
"""What a run writes into its folder; an overwrite removes exactly these (anything else in the folder stays)."""

RESUMABLE_KEYS = frozenset(
    {"out_dir", "max_steps", "log_every", "checkpoint_every", "tensorboard", "num_workers", "timeout", "cache_dir"}
    | {"export_tag"}  # the export's name, not what it holds
    | {"online_eval", "online_every", "online_frames", "online_max_items", "online_data_root"}
    | {"store_budget_mb", "store_file", "decoder"}  # where and how frames are held (the same frames)
    | {"device", "graphs", "compile", "channels_last", "hypergrad", "threads"}  # how the same steps execute
)
"""Config keys a resumed run may change silently: how it runs and reports, never what it computes. (``store`` is
not one: the stream and the frame store batch an epoch differently, and their resume states differ.)"""

LEGACY_VALUES = {"bn_views": "joint", "init": "timm", "store": "off"}
"""What a checkpoint that predates a setting did, where that differs from today's default: before ``bn_views``,
``init`` and ``store`` existed, both views shared one BatchNorm batch, ResNets started as timm's, and data streamed.
Any other missing key behaved as its default does now."""

RECORDED_KEYS = frozenset({"epochs"})
"""Config keys a resumed run may change, with a warning, recorded in ``summary.json`` (extending a run changes the
cosine schedule of the epochs still to come, not what was done)."""

LOCK_NAME = ".lock"
MARKER_NAME = ".timm-uscl-run"


@dataclass
class RunFolder:
    """A claimed run folder; holds its lock until :meth:`release` (or the process ends)."""

    path: Path
    handle: TextIO | None

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def _lock(path: Path) -> TextIO:
    handle = open(path / LOCK_NAME, "a+")  # noqa: SIM115 - held open for the run's lifetime, closed by release()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunFolderError(
            f"{path} is in use by a live run ({holder}); wait for it to finish, or pick another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def _existing_run_files(path: Path) -> list[str]:
    return [name for name in RUN_FILES if (path / name).exists() or (path / name).is_symlink()]


def _remove(path: Path, names: list[str]) -> None:
    for name in names:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()


def _settle_existing(path: Path, *, resume: bool, overwrite: bool) -> None:
    """Apply the module docstring's rules to what ``path`` already holds (the folder is locked)."""
    existing = _existing_run_files(path)
    has_checkpoint = (path / CHECKPOINT_NAME).is_file()
    finished = (path / "summary.json").exists() or (path / "export").exists()
    is_run = (path / MARKER_NAME).is_file() or has_checkpoint or (path / "summary.json").is_file()
    if existing and not is_run:
        raise RunFolderError(
            f"{path} holds {', '.join(existing)} but no timm-uscl run (no {MARKER_NAME}, last.pt or summary.json), "
            f"so nothing there is removed or reused: pick another --out"
        )
    if existing and overwrite:
        log.warning("--overwrite: removing the previous run's %s from %s", ", ".join(existing), path)
        _remove(path, existing)
    elif existing and resume and not has_checkpoint and not finished:  # an attempt that failed before checkpointing
        log.warning("--resume: %s holds an attempt with no checkpoint (%s); starting afresh", path, ", ".join(existing))
        _remove(path, existing)
    elif existing and not (resume and has_checkpoint):
        hint = (
            "it has no checkpoint to resume from: pass --overwrite to start over"
            if resume
            else "pass --resume to continue it, --overwrite to replace it"
        )
        raise RunFolderError(f"{path} already holds a run ({', '.join(existing)}); {hint}, or pick another --out")
    elif resume and not has_checkpoint:
        log.info("--resume: %s holds no run yet, starting from scratch", path)


def claim_run_folder(out_dir: str | os.PathLike, *, resume: bool, overwrite: bool) -> RunFolder:
    """Create and lock ``out_dir`` for one run, enforcing the rules of the module docstring."""
    if not str(out_dir).strip():
        raise RunFolderError("the run folder is an empty path: give --out a folder, e.g. runs/my_run")
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: pick one")
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file, not a run folder: pick another --out")
    path.mkdir(parents=True, exist_ok=True)
    handle = _lock(path)
    try:
        for partial in path.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # a killed run's half-written checkpoint
            partial.unlink()
        _settle_existing(path, resume=resume, overwrite=overwrite)
        (path / MARKER_NAME).write_text("a timm-uscl pretraining run: its files may be replaced by --overwrite\n")
    except BaseException:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
        raise
    return RunFolder(path, handle)


def _normalised(values: dict[str, Any]) -> dict[str, Any]:
    """``source`` with local paths resolved, so a folder named two ways is one source."""

    def one(source: Any) -> Any:
        return os.path.realpath(source) if isinstance(source, str) and os.path.exists(source) else source

    source = values.get("source")
    values["source"] = [one(s) for s in source] if isinstance(source, list | tuple) else one(source)
    return values


def _describe(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


def check_resume_config(saved: Mapping[str, Any], config: Mapping[str, Any], checkpoint: Path) -> list[str]:
    """Refuse to resume with a config that computes something else than the checkpoint's run (``lr``, data, size,
    seed, preset, ...): the resumed run would record one recipe and follow another. :data:`RESUMABLE_KEYS` may change;
    changes of :data:`RECORDED_KEYS` are returned (``"epochs 1 -> 2"``) for the caller to log and record. A key that
    the checkpoint's version of the trainer did not have yet counts as its default (a newer trainer resumes an older
    run as long as the new setting keeps what the older trainer did: :data:`LEGACY_VALUES`, else its default). Local
    data paths compare by the folder they name (``./x`` and ``x`` are one source)."""
    defaults = {**flat_config(dataclasses.asdict(TrainConfig())), **LEGACY_VALUES}
    new = _normalised(flat_config(dict(config)))
    old = _normalised({**{k: defaults[k] for k in new if k in defaults}, **flat_config(dict(saved))})
    if old.get("store") == "auto" and new.get("store") != "auto":  # recorded unresolved, resumed resolved: what
        # auto did then (the stream on a CPU, the store on a GPU) is what the run computed
        old["store"] = "device" if str(old.get("device", "")).startswith("cuda") else "off"
    diffs = {
        key: f"{key} {_describe(old.get(key))} -> {_describe(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if key not in RESUMABLE_KEYS and _describe(old.get(key)) != _describe(new.get(key))
    }
    changed = [text for key, text in diffs.items() if key not in RECORDED_KEYS]
    if changed:
        raise RunFolderError(
            f"{checkpoint} was written with another config ({'; '.join(changed)}): resume with the run's own settings "
            f"(see config.yaml beside it), or start a new --out"
        )
    return [text for key, text in diffs.items() if key in RECORDED_KEYS]
