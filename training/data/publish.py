"""Publish a folder of videos (+ optional ``metadata.csv``) as a streamable Hub dataset.

Output layout (what ``load_dataset(repo_id, streaming=True)`` and :mod:`.sources` read)::

    README.md                                  dataset card (hub_cards/dataset_card.md.j2)
    data/train-00000-of-0000N.parquet          video bytes embedded, metadata columns alongside

Videos are embedded verbatim (no re-encode: licences such as CC BY-NC-ND allow only verbatim copies) and
grouped into shards of at most ``max_shard_mb`` (and ``max_videos_per_shard``), so streaming readers get
several shards to split across DataLoader workers and ranks. The card lists the licence of every file
when the metadata has a ``licence``/``license`` column, and the citation you pass.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .sources import SourceSpec, folder_rows

__all__ = ["build_shards", "render_dataset_card", "publish_dataset"]

_LICENCE_COLUMNS = ("licence", "license")


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


def build_shards(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_shard_mb: float = 500.0,
    max_videos_per_shard: int | None = None,
) -> tuple[list[Path], list[dict[str, Any]]]:
    """Write ``out_dir/data/train-*.parquet`` with the videos of ``folder`` embedded; returns (shards, rows)."""
    from datasets import Dataset, Video
    from tqdm.auto import tqdm

    root = Path(folder)
    rows = folder_rows(SourceSpec(str(root)))
    if not rows:
        raise DataError(f"{root}: no video files and no metadata.csv rows; nothing to publish")
    for r in rows:
        if not os.path.isfile(r["video"]["path"]):
            raise DataError(f"{root}/metadata.csv lists {r['video']['path']}, which does not exist; fix the file_name")
    limit = max_shard_mb * 2**20
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for r in rows:
        n = os.path.getsize(r["video"]["path"])
        full = max_videos_per_shard is not None and len(groups[-1]) >= max_videos_per_shard
        if groups[-1] and (size + n > limit or full):
            groups.append([])
            size = 0
        groups[-1].append(r)
        size += n
    data = Path(out_dir) / "data"
    data.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, group in enumerate(tqdm(groups, desc="parquet shards", unit="shard")):
        cols = _columns(group)
        videos = [
            {
                "bytes": Path(r["video"]["path"]).read_bytes(),
                "path": os.path.relpath(r["video"]["path"], root).replace(os.sep, "/"),
            }
            for r in group
        ]
        ds = Dataset.from_dict({"video": videos, **cols})
        ds = ds.cast_column("video", Video())
        path = data / f"train-{i:05d}-of-{len(groups):05d}.parquet"
        ds.to_parquet(str(path))
        shards.append(path)
    return shards, rows


def render_dataset_card(
    rows: Sequence[dict[str, Any]],
    *,
    repo_id: str,
    pretty_name: str | None = None,
    citation: str | None = None,
    description: str | None = None,
    licence: str | None = None,
    num_shards: int = 1,
) -> str:
    """The dataset card: YAML header (licence, tags, data files), counts, per-file licences, citation."""
    from timm_uscl.cards import render

    col = next((c for c in _LICENCE_COLUMNS if any(r.get(c) for r in rows)), None)
    per_file = [(os.path.basename(r["video"]["path"]), str(r.get(col) or "unspecified")) for r in rows] if col else []
    counts = Counter(lic for _, lic in per_file)
    if licence is None:
        licence = next(iter(counts)).lower() if len(counts) == 1 else "other"
    sources = Counter(str(r.get("source") or "") for r in rows if r.get("source"))
    columns = [k for k in rows[0] if k not in ("video", "key")]
    return render(
        "dataset_card.md.j2",
        repo_id=repo_id,
        pretty_name=pretty_name or repo_id.rsplit("/", 1)[-1],
        licence=licence,
        num_videos=len(rows),
        num_shards=num_shards,
        columns=columns,
        licence_counts=sorted(counts.items()),
        per_file_licences=per_file,
        sources=sorted(sources.items()),
        citation=citation or "",
        description=description or "",
    )


def publish_dataset(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    max_shard_mb: float = 500.0,
    max_videos_per_shard: int | None = None,
    pretty_name: str | None = None,
    citation: str | None = None,
    description: str | None = None,
    licence: str | None = None,
    out_dir: str | os.PathLike | None = None,
    push: bool = True,
) -> str:
    """Build shards + card for ``folder`` and push them to the dataset repo ``repo_id``; returns its URL.

    With ``push=False`` the files are only written to ``out_dir`` (a dry run to inspect).
    """
    with tempfile.TemporaryDirectory(prefix="timm_uscl_publish_") as tmp:
        stage = Path(out_dir) if out_dir is not None else Path(tmp)
        shards, rows = build_shards(folder, stage, max_shard_mb=max_shard_mb, max_videos_per_shard=max_videos_per_shard)
        card = render_dataset_card(
            rows,
            repo_id=repo_id,
            pretty_name=pretty_name,
            citation=citation,
            description=description,
            licence=licence,
            num_shards=len(shards),
        )
        (stage / "README.md").write_text(card, encoding="utf-8")
        if not push:
            return str(stage)
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(stage),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=f"Publish {len(rows)} videos in {len(shards)} parquet shards (timm-uscl)",
        )
        return str(url)
