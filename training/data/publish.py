"""Publish a folder of videos (+ optional ``metadata.csv``) as a streamable Hub dataset, privately unless asked.

Output layout (what ``load_dataset(repo_id, streaming=True)`` and :mod:`.sources` read)::

    README.md                                  dataset card (hub_cards/dataset_card.md.j2)
    LICENSE.md                                 the licence of every file, when the card's licence is "other"
    data/train-00000-of-0000N.parquet          video bytes embedded, metadata columns alongside

Videos are embedded verbatim (no re-encode: licences such as CC BY-NC-ND allow only verbatim copies) and
grouped into shards of at most ``max_shard_mb`` (and ``max_videos_per_shard``), so streaming readers get
several shards to split across DataLoader workers and ranks.

What leaves the machine is exactly what the listing shows (H1): only regular video files inside FOLDER are
read, each through a descriptor opened without following links; ``../``, absolute names, symbolic links (into
or out of the folder), folders and non-video files are refused with one line naming the metadata row. The
listing (file, size, licence) is handed to the caller before anything is pushed, the repo is created private
unless ``private=False``, and an existing public repo is refused unless publishing publicly was asked for.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, PublishError
from .sources import VIDEO_EXTENSIONS, SourceSpec, folder_rows, list_folder

__all__ = [
    "HUB_LICENCES",
    "HUB_TASK_CATEGORIES",
    "PublishFile",
    "build_shards",
    "card_licence",
    "publish_dataset",
    "publish_files",
    "render_dataset_card",
    "upload_listing",
]

_LICENCE_COLUMNS = ("licence", "license")
_LICENCE_FILE = "LICENSE.md"

HUB_LICENCES = frozenset(
    {
        "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "gpl-3.0", "lgpl-3.0", "agpl-3.0", "mpl-2.0",
        "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
        "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "odc-by", "odbl", "pddl", "cdla-permissive-2.0",
        "cdla-sharing-1.0", "unknown",
    }
)  # fmt: skip
"""Licence identifiers of the Hub's licence list that a video corpus may carry; anything else is ``other``
with a ``license_name`` and a ``license_link`` (the Hub's convention for licences outside its list)."""

HUB_TASK_CATEGORIES = frozenset(
    {
        "video-classification", "image-feature-extraction", "image-classification", "image-segmentation",
        "object-detection", "depth-estimation", "image-to-image", "image-to-text", "image-to-video",
        "text-to-video", "video-text-to-text", "mask-generation", "keypoint-detection",
        "zero-shot-image-classification", "zero-shot-object-detection", "unconditional-image-generation",
    }
)  # fmt: skip
"""The Hub's task categories for image and video data (the ``task_categories`` a card may name)."""

_SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


@dataclass(frozen=True)
class PublishFile:
    """A video that will be uploaded: its name in the repo, its local path, size in bytes and licence."""

    rel: str
    path: Path
    size: int
    licence: str
    row: dict[str, Any]


def _check_publishable(root: Path, rel: str, path: Path, where: str) -> int:
    """The size of ``path`` if it is a regular video file reached through no symbolic link; else DataError."""
    parts = Path(os.path.relpath(path, root)).parts
    for i in range(len(parts)):
        if (root.joinpath(*parts[: i + 1])).is_symlink():
            raise DataError(
                f"{where}: {rel!r} is (or goes through) a symbolic link; publish-dataset uploads only regular "
                "files inside the folder: replace the link by the file"
            )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise DataError(f"{where}: {rel!r} does not exist; fix the file_name or remove the row") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{where}: {rel!r} is not a regular file; list video files only")
    if st.st_nlink > 1:  # N9: a hard link named .mp4 published any file of the disk (a token, a key)
        raise DataError(
            f"{where}: {rel!r} has {st.st_nlink} hard links, so it may be a file from outside the folder under a "
            "video's name; publish-dataset uploads only files with one name: replace it by a copy (cp)"
        )
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise DataError(
            f"{where}: {rel!r} is not a video container ({' '.join(VIDEO_EXTENSIONS)}); remove the row or the file"
        )
    return st.st_size


def publish_files(folder: str | os.PathLike) -> list[PublishFile]:
    """Every file ``folder`` would publish, checked (see the module docstring); nothing is read yet."""
    root = Path(folder)
    spec = SourceSpec(str(root))
    entries = list_folder(spec)
    if not entries:
        raise DataError(f"{root}: no video files and no metadata.csv rows; nothing to publish")
    sizes = [_check_publishable(root, e.rel, e.path, e.where) for e in entries]
    rows = folder_rows(spec)  # the same entries, as pipeline rows (metadata typed as the trainer reads it)
    out = []
    for entry, size, row in zip(entries, sizes, rows):
        name = os.path.relpath(entry.path, root).replace(os.sep, "/")
        licence = next((str(row[c]) for c in _LICENCE_COLUMNS if row.get(c)), "unspecified")
        out.append(PublishFile(name, entry.path, size, licence, row))
    return out


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file, through a descriptor that does not follow a link planted since the check."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise DataError(f"{path}: not a regular file with one name any more; publish again")
        return f.read()


def upload_listing(files: Sequence[PublishFile], repo_id: str, private: bool) -> str:
    """What will be uploaded, one line per file (name, bytes, licence), then the totals and the visibility."""
    width = max(len(f.rel) for f in files)
    lines = [f"  {f.rel:<{width}}  {f.size:>12,} bytes  {f.licence}" for f in files]
    total = sum(f.size for f in files)
    lines.append(
        f"{len(files)} file{'s' if len(files) != 1 else ''}, {total:,} bytes, to the "
        f"{'private' if private else 'PUBLIC'} dataset repo {repo_id}"
    )
    return "\n".join(lines)


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Metadata as parquet-friendly columns: all-int columns stay int, anything mixed becomes string."""
    names = [k for k in rows[0] if k not in ("video", "key")]
    cols: dict[str, list[Any]] = {}
    for name in names:
        values = [r.get(name) for r in rows]
        if not all(v is None or isinstance(v, int) for v in values):
            values = [None if v is None else str(v) for v in values]
        cols[name] = values
    return cols


def _shard_groups(files: Sequence[PublishFile], max_shard_mb: float, max_videos: int | None) -> list[list[Any]]:
    limit = max_shard_mb * 2**20
    groups: list[list[PublishFile]] = [[]]
    size = 0
    for f in files:
        full = max_videos is not None and len(groups[-1]) >= max_videos
        if groups[-1] and (size + f.size > limit or full):
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += f.size
    return groups


def build_shards(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_shard_mb: float = 500.0,
    max_videos_per_shard: int | None = None,
    files: Sequence[PublishFile] | None = None,
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Write ``out_dir/data/train-*.parquet`` with the videos of ``folder`` embedded; returns (shards, rows).

    The rows' ``video.path`` is the name inside the repo (relative to ``folder``).
    """
    from datasets import Dataset, Video
    from tqdm.auto import tqdm

    files = list(files) if files is not None else publish_files(folder)
    groups = _shard_groups(files, max_shard_mb, max_videos_per_shard)
    data = Path(out_dir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    shards, rows = [], []
    for i, group in enumerate(tqdm(groups, desc="parquet shards", unit="shard")):
        videos = [{"bytes": _read_regular(f.path), "path": f.rel} for f in group]
        ds = Dataset.from_dict({"video": videos, **_columns([f.row for f in group])})
        ds = ds.cast_column("video", Video())
        path = data / f"train-{i:05d}-of-{len(groups):05d}.parquet"
        ds.to_parquet(str(path))
        shards.append(path)
        rows += [{**f.row, "video": {"path": f.rel, "bytes": None}} for f in group]
    return shards, rows


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unspecified"


def card_licence(per_file: Sequence[str], licence: str | None = None) -> tuple[str, str | None, str | None]:
    """``(license, license_name, license_link)`` for the card: a Hub licence id when the corpus has one (or the
    caller names one), else ``other`` with a slug name and a link to the per-file licence list."""
    counts = Counter(per_file)
    if licence is None:
        licence = next(iter(counts)) if len(counts) == 1 else "per-file licences"
    if licence.lower() in HUB_LICENCES and licence.lower() != "other":
        return licence.lower(), None, None
    return "other", _slug(licence), _LICENCE_FILE


def _size_category(n: int) -> str:
    return next((label for limit, label in _SIZE_BUCKETS if n < limit), "n>1M")


def _card_metadata(
    files: Sequence[tuple[str, str]],
    pretty_name: str,
    licence: str | None,
    task_categories: Sequence[str],
) -> str:
    """The card's YAML header, built with huggingface_hub's DatasetCardData (the Hub's field names)."""
    from huggingface_hub import DatasetCardData  # optional heavy dependency of the trainer's publishing only

    unknown = sorted(set(task_categories) - HUB_TASK_CATEGORIES)
    if unknown:
        raise DataError(
            f"task category {unknown[0]!r} is not a Hub task category; choose from {sorted(HUB_TASK_CATEGORIES)}"
        )
    license_id, license_name, license_link = card_licence([lic for _, lic in files], licence)
    data = DatasetCardData(
        license=license_id,
        license_name=license_name,
        license_link=license_link,
        pretty_name=pretty_name,
        task_categories=list(task_categories),
        size_categories=[_size_category(len(files))],
        tags=["video", "ultrasound", "medical-imaging", "timm-uscl"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
    )
    return data.to_yaml()


def render_dataset_card(
    rows: Sequence[dict[str, Any]],
    *,
    repo_id: str,
    pretty_name: str | None = None,
    citation: str | None = None,
    description: str | None = None,
    licence: str | None = None,
    num_shards: int = 1,
    task_categories: Sequence[str] = ("video-classification", "image-feature-extraction"),
) -> str:
    """The dataset card: YAML header (licence, tasks, size, data files), counts, per-file licences, citation."""
    from timm_uscl.cards import render

    col = next((c for c in _LICENCE_COLUMNS if any(r.get(c) for r in rows)), None)
    per_file = [(str(r["video"]["path"]), str(r.get(col) or "unspecified")) for r in rows] if col else []
    pretty = pretty_name or repo_id.rsplit("/", 1)[-1]
    files = per_file or [(str(r["video"]["path"]), licence or "unspecified") for r in rows]
    metadata = _card_metadata(files, pretty, licence, task_categories)
    sources = Counter(str(r.get("source") or "") for r in rows if r.get("source"))
    return render(
        "dataset_card.md.j2",
        metadata=metadata,
        repo_id=repo_id,
        pretty_name=pretty,
        licence=card_licence([lic for _, lic in files], licence)[0],
        num_videos=len(rows),
        num_shards=num_shards,
        columns=[k for k in rows[0] if k not in ("video", "key")],
        licence_counts=sorted(Counter(lic for _, lic in per_file).items()),
        per_file_licences=per_file,
        licence_file=_LICENCE_FILE,
        sources=sorted(sources.items()),
        citation=citation or "",
        description=description or "",
    )


def _licence_file(files: Sequence[PublishFile], repo_id: str) -> str:
    lines = [
        f"# Licences of {repo_id}",
        "",
        "Each file keeps its own licence; using a file means following that licence (attribution, non-commercial,",
        "share-alike or no-derivatives terms as they apply).",
        "",
        "| file | licence |",
        "|---|---|",
    ]
    return "\n".join([*lines, *(f"| {f.rel} | {f.licence} |" for f in files)]) + "\n"


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except Exception as e:  # noqa: BLE001 - HFValidationError: a ValueError subclass, named for the message
        raise PublishError(f"{repo_id!r}: not a valid repo id ({_first_line(e)}); use 'user/name'") from None
    if "/" not in repo_id:
        raise PublishError(f"{repo_id!r}: give the repo id as 'user/name' or 'org/name'")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _push(stage: Path, repo_id: str, private: bool, token: str | None, message: str) -> str:
    """Create (or reuse) the dataset repo and upload ``stage``; every Hub failure is one :class:`PublishError`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if private and not api.repo_info(repo_id, repo_type="dataset").private:
            raise PublishError(
                f"{repo_id}: this dataset repo exists and is public; pass --public (private=False) to publish "
                "into it, or make it private first"
            )
        api.upload_folder(folder_path=str(stage), repo_id=repo_id, repo_type="dataset", commit_message=message)
    except PublishError:
        raise
    except Exception as e:  # noqa: BLE001 - huggingface_hub reports HTTP, network and auth failures as many types
        raise PublishError(
            f"{repo_id}: cannot publish ({type(e).__name__}: {_first_line(e)}); check the repo id, your token "
            "(hf auth login) and the network"
        ) from None
    return str(url)


def publish_dataset(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    max_shard_mb: float = 500.0,
    max_videos_per_shard: int | None = None,
    pretty_name: str | None = None,
    citation: str | None = None,
    description: str | None = None,
    licence: str | None = None,
    task_categories: Sequence[str] = ("video-classification", "image-feature-extraction"),
    out_dir: str | os.PathLike | None = None,
    push: bool = True,
    listing: Callable[[str], None] | None = None,
) -> str:
    """Build shards + card for ``folder`` and push them to the dataset repo ``repo_id``; returns its URL.

    ``listing`` receives :func:`upload_listing` before anything is pushed (the CLI prints it). With
    ``push=False`` the files are only written to ``out_dir`` (a dry run to inspect).
    """
    _check_repo_id(repo_id)
    if out_dir is not None and Path(out_dir).is_dir() and any(Path(out_dir).iterdir()):
        raise DataError(f"{out_dir}: not empty; give a new or empty --out-dir (everything in it would be uploaded)")
    files = publish_files(folder)
    if listing is not None:
        listing(upload_listing(files, repo_id, private))
    with tempfile.TemporaryDirectory(prefix="timm_uscl_publish_") as tmp:
        stage = Path(out_dir) if out_dir is not None else Path(tmp)
        shards, rows = build_shards(
            folder, stage, max_shard_mb=max_shard_mb, max_videos_per_shard=max_videos_per_shard, files=files
        )
        card = render_dataset_card(
            rows,
            repo_id=repo_id,
            pretty_name=pretty_name,
            citation=citation,
            description=description,
            licence=licence,
            num_shards=len(shards),
            task_categories=task_categories,
        )
        (stage / "README.md").write_text(card, encoding="utf-8")
        if card_licence([f.licence for f in files], licence)[0] == "other":
            (stage / _LICENCE_FILE).write_text(_licence_file(files, repo_id), encoding="utf-8")
        if not push:
            return str(stage)
        message = f"Publish {len(rows)} videos in {len(shards)} parquet shards (timm-uscl)"
        return _push(stage, repo_id, private, token, message)
