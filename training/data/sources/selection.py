"""Which videos a run sees: the metadata filters and the seeded meta split.

Filters keep rows whose column is in the given values (``filters``) and drop rows whose column is in
``exclude`` (e.g. the evaluation fold); a column absent from the metadata is a :class:`DataError`. The meta
split holds out a seeded share of the videos by their identity (``key``, or a grouping column), never by their
listing order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ...errors import DataError

__all__ = ["describe_filters", "meta_split_fn", "row_filter"]


def row_filter(
    filters: Mapping[str, Any] | None,
    exclude: Mapping[str, Any] | None,
    columns: Iterable[str] | None = None,
    per_frame: Iterable[str] = (),
) -> Callable[[Mapping[str, Any]], bool] | None:
    """A predicate keeping rows whose ``filters`` columns match and whose ``exclude`` columns do not.

    Values may be a scalar or a list; numbers and their string forms compare equal (CSV vs parquet).
    ``per_frame``: columns dropped because they differ between the frames of one video (named when asked for).
    """

    def norm(v: Any) -> set[str]:
        return {str(x) for x in (v if isinstance(v, list | tuple | set | frozenset) else [v])}

    inc = {k: norm(v) for k, v in (filters or {}).items()}
    exc = {k: norm(v) for k, v in (exclude or {}).items()}
    if not inc and not exc:
        return None
    if columns is not None:
        missing = sorted((set(inc) | set(exc)) - set(columns))
        if missing:
            varying = sorted(set(missing) & set(per_frame))
            note = (
                f"; {varying} differ between the frames of one video: filter on a per-video column" if varying else ""
            )
            raise DataError(f"filter column(s) {missing} not in the metadata (columns: {sorted(columns)}){note}")

    def keep(row: Mapping[str, Any]) -> bool:
        return all(str(row.get(k)) in v for k, v in inc.items()) and not any(
            str(row.get(k)) in v for k, v in exc.items()
        )

    return keep


def describe_filters(filters: Mapping[str, Any] | None, exclude: Mapping[str, Any] | None) -> str:
    """``filters={...}, exclude={...}`` for a message saying the filters left nothing."""
    return ", ".join(f"{k}={dict(v)!r}" for k, v in (("filters", filters), ("exclude", exclude)) if v)


def meta_split_fn(fraction: float, seed: int, group_column: str | None = None) -> Callable[[Mapping[str, Any]], bool]:
    """``row -> True`` for the held-out meta split: a seeded hash of the key (or group) below ``fraction``.

    Depends only on the identity, never on listing order, so it is the same from a folder, the Hub or
    parquet, on every rank, and a video stays on its side when the corpus grows. A row without the group
    column (absent from the metadata, or differing between the frames of a grouped video) is an error, not a
    split by ``None`` that would put every video on one side.
    """

    def is_meta(row: Mapping[str, Any]) -> bool:
        if group_column and group_column not in row:
            raise DataError(
                f"meta_group_by={group_column!r}: video {row.get('key')!r} has no such column (columns: "
                f"{sorted(k for k in row if k != 'video')}); group by a metadata column with one value per video"
            )
        ident = str(row.get(group_column)) if group_column else str(row["key"])
        h = hashlib.blake2b(f"{seed}:{ident}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2.0**64 < fraction

    return is_meta
