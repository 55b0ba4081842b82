"""The local weights store: exports installed on this machine, loadable by tag name without the Hub.

Why: until a tag is published, its weights exist only as export folders (a training run, a conversion of the
authors' file), reachable through ``local-dir:PATH`` but not by name. Installing an export copies it to
``<store>/<arch>.<tag>/`` (``TIMM_USCL_WEIGHTS``, default ``$HF_HOME/timm-uscl/weights``, next to the Hub cache)
and records its sha256 in ``installed.json``; ``timm.create_model("<arch>.<tag>", pretrained=True)`` then loads it
offline, after checking that sha256 again (a tampered copy is refused). The registry (:mod:`.uscl`) lists a tag as
pretrained only when it is published or installed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants

from .checksum import sha256_file
from .errors import CheckpointFormatError, ChecksumMismatchError, OutputFolderError, UnknownWeightsError
from .export_folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, check_export, record_card
from .names import check_builtin_weights, check_user_name, is_builtin
from .outdir import check_out_dir, commit, staging
from .record import RECORD_KEY, entry_from_record
from .weights import WEIGHTS, WeightsEntry, get_weights

__all__ = [
    "STORE_ENV",
    "RECORD_NAME",
    "Installed",
    "store_root",
    "find_installed",
    "installed",
    "installed_entry",
    "add",
    "verified",
]

STORE_ENV = "TIMM_USCL_WEIGHTS"
RECORD_NAME = "installed.json"


@dataclass(frozen=True)
class Installed:
    """One installed tag: its folder, the sha256 recorded at install, and the export's preprocessing."""

    name: str
    folder: Path
    sha256: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_NAME


def store_root() -> Path:
    """``$TIMM_USCL_WEIGHTS``, else ``<HF_HOME>/timm-uscl/weights`` (read at call time: tests and users may move it)."""
    configured = os.environ.get(STORE_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path(hf_constants.HF_HOME) / "timm-uscl" / "weights"


def find_installed(name: str) -> Installed | None:
    """The installed copy of ``<arch>.<tag>``, or None (an unreadable record counts as not installed)."""
    folder = store_root() / name
    try:
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
        cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["pretrained_cfg"]
        channels, height, width = (int(x) for x in cfg["input_size"])
        mean, std = tuple(float(x) for x in cfg["mean"]), tuple(float(x) for x in cfg["std"])
        return Installed(name, folder, str(record["sha256"]), (channels, height, width), mean, std)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _user_names() -> list[str]:
    """The valid user names (``<arch>.<tag>``, not built-in) of the store's folders, sorted."""
    root = store_root()
    names = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            check_user_name(folder.name)
        except UnknownWeightsError:
            continue
        names.append(folder.name)
    return names


def installed() -> dict[str, Installed]:
    """Every installed tag: the weights table's (in table order), then the user's own (sorted)."""
    names = [*WEIGHTS, *_user_names()]
    return {name: found for name in names if (found := find_installed(name)) is not None}


def installed_entry(found: Installed) -> WeightsEntry:
    """The card facts of an installed export, from its own record (what ``list`` shows for a user's tag)."""
    config = json.loads((found.folder / CONFIG_NAME).read_text(encoding="utf-8"))
    return entry_from_record(config, str(found.folder / CONFIG_NAME))


def verified(found: Installed) -> Path:
    """The installed weights file, after checking it still has the sha256 recorded at install."""
    actual = sha256_file(found.weights)
    if actual != found.sha256:
        raise ChecksumMismatchError(
            f"{found.name}: the installed {found.weights} has sha256 {actual}, but {RECORD_NAME} records "
            f"{found.sha256}: the copy was modified; install the export again with "
            f"`timm-uscl install EXPORT --tag {found.name} --overwrite`."
        )
    return found.weights


def add(export_dir: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> Path:
    """Validate an export (:func:`check_export`) and copy it into the store under ``name``; returns its folder.

    ``name`` defaults to the tag the export records, and must be that tag when given: the export's card and
    config describe themselves under it. Any user tag (``<arch>.<your tag>``) installs; a built-in tag only when
    the export holds the weights its row describes: the row's recorded sha256, or (before publication) an export
    of the row itself, not a training run's. An installed tag is replaced only with ``overwrite``.
    """
    source = Path(export_dir)
    config = check_export(source)
    block = config[RECORD_KEY]
    recorded = block["name"]
    target = name or recorded
    if not is_builtin(target):
        check_user_name(target)
    if target != recorded:
        raise CheckpointFormatError(
            f"{source}: the export records {recorded}, not {target}; install it with --tag {recorded}, or "
            f"re-export the weights under {target} (`timm-uscl export ... --tag {target}`)."
        )
    if is_builtin(recorded) and (get_weights(recorded).sha256 is not None or block["run"]):
        check_builtin_weights(get_weights(recorded), block["sha256"])
    entry = get_weights(recorded) if is_builtin(recorded) else entry_from_record(config, str(source / CONFIG_NAME))
    if not overwrite and (found := find_installed(entry.name)) is not None:
        raise OutputFolderError(
            f"{entry.name} is already installed at {found.folder}; pass --overwrite (overwrite=True) to replace it."
        )
    out, stale = check_out_dir(store_root() / entry.name, overwrite, owned=(RECORD_NAME,))
    with staging(out) as stage:
        for file_name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copyfile(source / file_name, stage / file_name)
        (stage / CARD_NAME).write_text(record_card(config, str(source / CONFIG_NAME)))  # never the folder's card
        digest = sha256_file(stage / WEIGHTS_NAME)
        if digest != config[RECORD_KEY]["sha256"]:  # the export changed while it was copied
            raise ChecksumMismatchError(f"{source}: model.safetensors changed during install; install it again.")
        record = {"name": entry.name, "sha256": digest, "source": str(source.resolve())}
        (stage / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
        commit(stage, out, stale)
    return out
