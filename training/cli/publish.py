"""``timm-uscl publish-dataset FOLDER REPO_ID``: a folder of videos -> a streamable Hub dataset.

Import-light: only argparse at import; the handler imports :mod:`..data.publish` (datasets, huggingface_hub).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``publish-dataset`` subcommand; its handler is ``args.func(args) -> int``."""
    p = subparsers.add_parser(
        "publish-dataset",
        help="publish a folder of videos as a Hub dataset (parquet shards + card)",
        description="Embed the videos of FOLDER (and its metadata.csv) verbatim into parquet shards, render a "
        "dataset card with per-file licences, and push them to the dataset repo REPO_ID (private unless --public). "
        "Only regular video files inside FOLDER are read; the list of files, sizes and licences is printed before "
        "anything is pushed.",
    )
    p.add_argument("folder", help="folder of videos, optionally with a videofolder-style metadata.csv")
    p.add_argument("repo_id", help="dataset repo, e.g. org/lung-ultrasound-videos")
    p.add_argument("--max-shard-mb", type=float, default=500.0, help="upper bound of one parquet shard (MiB)")
    p.add_argument("--max-videos-per-shard", type=int, default=None, help="upper bound of videos per shard")
    p.add_argument("--pretty-name", default=None)
    p.add_argument(
        "--licence",
        "--license",
        dest="licence",
        default=None,
        help="card licence id (default: the metadata's single licence, else 'other')",
    )
    p.add_argument(
        "--task-category",
        dest="task_categories",
        action="append",
        default=None,
        help="a Hub task category for the card (repeatable; default: video-classification, image-feature-extraction)",
    )
    p.add_argument("--citation-file", default=None, help="a BibTeX file for the card's citation section")
    p.add_argument("--description", default=None, help="a paragraph for the top of the card")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--private", action="store_true", help="the default; accepted for older scripts")
    p.add_argument("--out-dir", default=None, help="also keep the shards and card here")
    p.add_argument("--dry-run", action="store_true", help="write to --out-dir only, push nothing")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from timm_uscl.errors import USCLError

    from ..data.publish import publish_dataset

    if args.dry_run and not args.out_dir:
        raise USCLError("--dry-run needs --out-dir to write the files to")
    if args.public and args.private:
        raise USCLError("--public and --private contradict each other; give one (private is the default)")
    citation = None
    if args.citation_file:
        if not Path(args.citation_file).is_file():
            raise USCLError(f"{args.citation_file}: citation file not found (give a BibTeX file)")
        citation = Path(args.citation_file).read_text(encoding="utf-8").strip()
    where = publish_dataset(
        args.folder,
        args.repo_id,
        private=not args.public,
        max_shard_mb=args.max_shard_mb,
        max_videos_per_shard=args.max_videos_per_shard,
        pretty_name=args.pretty_name,
        citation=citation,
        description=args.description,
        licence=args.licence,
        out_dir=args.out_dir,
        push=not args.dry_run,
        listing=lambda text: print(("would upload:\n" if args.dry_run else "uploading:\n") + text, flush=True),
        **({"task_categories": args.task_categories} if args.task_categories else {}),
    )
    print(("wrote " if args.dry_run else "published ") + where)
    return 0
