"""``timm-uscl compare``: paired differences between evaluation results. Import-light: the statistics are in
:mod:`..evaluation.compare`, loaded when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EvaluationError

__all__ = ["register"]


def _cmd_compare(args: argparse.Namespace) -> int:
    from timm_uscl.outdir import write_text_atomic

    from ..evaluation.compare import compare, comparison_markdown, load_method

    if args.markdown and not Path(args.markdown).expanduser().resolve().parent.is_dir():
        raise EvaluationError(f"{args.markdown}: its folder does not exist; create it first")
    methods = [load_method(path) for path in args.results]
    comparison = compare(
        methods,
        baseline=args.baseline,
        pairs=[tuple(p) for p in args.pair or ()],
        n_boot=args.bootstrap,
        allow_mixed_commits=args.allow_mixed_commits,
    )
    markdown = comparison_markdown(comparison)
    if args.markdown:
        write_text_atomic(Path(args.markdown).expanduser(), markdown)
    print(markdown, end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compare`` to the ``timm-uscl`` command line."""
    p = subparsers.add_parser(
        "compare",
        help="paired differences between `timm-uscl evaluate --out` results (every method minus random init, ...)",
        description="Every method minus the baseline, and Meta-USCL minus USCL and minus SimCLR when present, with "
        "95 %% intervals over folds x seeds (t) and over the pooled videos/images (paired bootstrap), in our scoring "
        "and the reference's (optimistic). Results are named by file: eval_<method>.json is <method>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results", nargs="+", help="evaluation JSONs of one evaluation setting (same folds, seeds, data)")
    p.add_argument(
        "--baseline",
        help="the result every other is compared with (default: random, or the one without pretrained weights)",
    )
    p.add_argument("--pair", nargs=2, action="append", metavar=("A", "B"), help="also compare A minus B (repeatable)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument(
        "--allow-mixed-commits",
        action="store_true",
        help="compare results of different code commits (flagged in the output) instead of refusing",
    )
    p.add_argument("--markdown", help="also write the comparison here")
    p.set_defaults(func=_cmd_compare)
