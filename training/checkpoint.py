"""Atomic, resumable checkpoints: a killed run loses at most the steps since the last save.

A checkpoint is written to a temporary file in the same folder, fsynced, then renamed over the old
one (rename is atomic on POSIX), and the folder is fsynced so the rename itself survives a crash.
Everything is stored as tensors and plain Python values, so it loads with ``weights_only=True``.

Progress is recorded as ``epochs_done`` (epochs completed: the resumed run continues in epoch index ``epochs_done``,
part-way through it when the data state says so) and ``step`` (steps taken, the last step number of
metrics.jsonl). Checkpoints written before that naming hold ``epoch`` (the same count under a name that read as the
epoch in progress); :func:`load_training_state` maps the old names (:data:`RENAMED_KEYS`), so they still resume.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

from timm_uscl.convert import refused_pickle
from timm_uscl.errors import CheckpointFormatError
from timm_uscl.tensors import WeightsBudget, check_file_size

from .config import flat_config
from .errors import RunFolderError

__all__ = [
    "CHECKPOINT_NAME",
    "TRAINING_STATE_KEYS",
    "RENAMED_KEYS",
    "save_checkpoint",
    "load_training_state",
    "capture_rng_state",
    "restore_rng_state",
]

CHECKPOINT_NAME = "last.pt"
TRAINING_STATE_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "cmw",
    "cmw_optimizer",
    "data",
    "rng",
    "epochs_done",
    "step",
    "config",
)
"""What a trainer checkpoint holds (``cmw``/``cmw_optimizer`` are None for runs without meta-weighting)."""
RENAMED_KEYS = {"epoch": "epochs_done"}
"""Earlier checkpoints' names -> today's (same value), applied on load."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically; a failed write (a full disk) leaves the previous file untouched and
    raises a one-line :class:`RunFolderError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = "the previous one is kept" if path.exists() else "no earlier checkpoint exists, so none is kept"  # L12
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as RuntimeError ("file write failed")
        Path(tmp).unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0][:160]
        raise RunFolderError(
            f"{path}: the checkpoint could not be written ({reason}); {kept}. Free space on that disk (or pick "
            f"another --out), then {'continue with --resume' if path.exists() else 'start the run again'}"
        ) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """A trainer checkpoint (model, optimizers, scheduler, RNG and data states), read with ``weights_only=True``
    and checked to hold every entry of :data:`TRAINING_STATE_KEYS`, each of the type the trainer writes.

    Bounded before anything is allocated (N2): the file is memory-mapped first (a tensor declared past the file
    fails to map), its size is checked against four weights budgets of the architecture its config names (the
    model, its optimizer state and the CMW-Net), and only then are the tensors copied into memory, so nothing
    returned stays mapped to a file that may be rewritten.
    Not for weights files: those are :func:`timm_uscl.convert.read_state_dict`'s."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise CheckpointFormatError(f"{path}: no such training checkpoint.") from None
    except IsADirectoryError:
        raise CheckpointFormatError(f"{path}: is a folder; give the run's last.pt file.") from None
    except Exception as err:  # unpickling, zip, EOF and mapping errors: all mean "not a checkpoint this code wrote"
        refused = refused_pickle(Path(path), err)
        raise refused or CheckpointFormatError(
            f"{path}: not a readable timm-uscl training checkpoint ({type(err).__name__}); give a last.pt written by "
            f"`timm-uscl pretrain` (it is written atomically, so a damaged one was altered after the run)."
        ) from err
    state = _current_names(state)
    missing = [key for key in TRAINING_STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointFormatError(
            f"{path}: not a complete timm-uscl training checkpoint (missing {', '.join(missing)}); give a last.pt "
            f"written by `timm-uscl pretrain`."
        )
    wrong = [key for key, kind in _STATE_TYPES.items() if not isinstance(state[key], kind)]
    wrong += [] if all(isinstance(v, torch.Tensor) for v in state["model"].values()) else ["model"]
    arch = flat_config(state["config"]).get("arch") if "config" not in wrong else None
    if not isinstance(arch, str) or not timm.is_model(arch):
        wrong.append("config (its arch)")
    if wrong or isinstance(state["epochs_done"], bool) or min(state["epochs_done"], state["step"]) < 0:
        raise CheckpointFormatError(
            f"{path}: not a timm-uscl training checkpoint (wrongly typed {', '.join(wrong) or 'epochs_done/step'}); "
            f"give a last.pt written by `timm-uscl pretrain`, or start a new --out."
        )
    check_file_size(Path(path), _checkpoint_budget(str(arch)), "give the last.pt this run wrote, or start a new --out")
    return _copied(state)


def _current_names(state: Any) -> Any:
    """``state`` with :data:`RENAMED_KEYS` under today's names (an older last.pt); a name already current wins."""
    if not isinstance(state, dict):
        return state
    renamed = {new: state[old] for old, new in RENAMED_KEYS.items() if old in state and new not in state}
    return {k: v for k, v in state.items() if k not in RENAMED_KEYS} | renamed


def _checkpoint_budget(arch: str) -> WeightsBudget:
    budget = WeightsBudget.of(arch)
    return WeightsBudget(budget.arch, 4 * budget.max_bytes)


def _copied(value: Any) -> Any:
    """``value`` with every tensor copied out of the file mapping."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(v) for v in value)
    return value


_STATE_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "cmw": (dict, type(None)),
    "cmw_optimizer": (dict, type(None)),
    "data": list,
    "rng": list,
    "epochs_done": int,
    "step": int,
    "config": dict,
}
"""The type of each :data:`TRAINING_STATE_KEYS` entry, checked at load (L4: a ``step`` of "3" used to end in
``TypeError: '<=' not supported``)."""


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert not isinstance(keys, str)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
