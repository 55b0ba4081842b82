"""``timm-uscl reproduce``: the paper-budget comparison as one resumable job (import-light: the work happens in the
handler; see :mod:`timm_uscl.training.reproduce`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from ..config import PRECISIONS
from ..evaluation.config import BUDGETS

ROOT_ENV = "TIMM_USCL_REPRO"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="pretrain Meta-USCL, USCL and SimCLR at the paper's budget, evaluate them and random init, compare, "
        "install the three with their results on their cards (resumable; `reproduce status` shows progress and ETA)",
        description="Run every stage left of the reproduction table; rerun the same command after an interruption "
        "to continue (finished stages are skipped, an interrupted pretraining resumes from last.pt).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("run", "status", "reset"), default="run")
    p.add_argument("stage", nargs="?", help="reset: the stage to forget (its record and folder are removed)")
    p.add_argument(
        "--root",
        default=os.environ.get(ROOT_ENV, "~/.cache/timm-uscl/repro"),
        help=f"run root, outside the work tree (env {ROOT_ENV})",
    )
    p.add_argument(
        "--data-root",
        default=os.environ.get("TIMM_USCL_DATA"),
        help="the data folder with covid_blues/, pocus/ and busi/ (env TIMM_USCL_DATA)",
    )
    p.add_argument("--epochs", type=int, default=300, help="pretraining epochs (the paper: 300)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--eval-budget",
        choices=sorted(BUDGETS),
        default="repro64",
        help="evaluation budget of every row (repro64: the reference's POCUS protocol at 64 px)",
    )
    p.add_argument("--online-every", type=int, default=25, help="epochs between online kNN / linear probes (POCUS)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per job (0: the cores divided among --jobs)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes sharing the stages, each pinned to its own cores (two one-thread jobs on two cores do "
        "more work than one two-thread job: benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--stages",
        nargs="+",
        metavar="STAGE",
        help="only these stages or kinds (pretrain, evaluate, table, install, or a stage name such as pretrain_uscl)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    import torch

    from ..errors import ConfigError
    from ..reproduce import Plan, reset_stage, run_reproduction, status_lines
    from ..runtime import resolve_precision

    if args.action == "status":
        print("\n".join(status_lines(args.root)))
        return 0
    if args.action == "reset":
        if not args.stage:
            raise ConfigError("reset needs the stage to forget, e.g. `timm-uscl reproduce reset evaluate_uscl`")
        for path in reset_stage(args.root, args.stage):
            print(f"removed {path}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.data_root:
        raise ConfigError("reproduce needs the data folder: pass --data-root DIR or set TIMM_USCL_DATA")
    if args.jobs > 1:
        return _spawn(args)
    if args.device not in ("cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        raise ConfigError(f"--device {args.device}: use cpu, or cuda on a machine with a GPU")
    precision = resolve_precision(args.precision, torch.device(args.device)).name  # one precision for every stage
    plan = Plan(
        data_root=str(os.path.abspath(args.data_root)),
        epochs=args.epochs,
        image_size=args.image_size,
        precision=precision,
        device=args.device,
        online_every=args.online_every,
        eval_budget=args.eval_budget,
    )
    stages = tuple(args.stages) if args.stages else None
    run_reproduction(args.root, dataclasses.replace(plan), stages=stages, threads=args.threads)
    print("\n".join(status_lines(args.root)))
    return 0


def _spawn(args: argparse.Namespace) -> int:
    """``--jobs N``: N copies of this command with ``--jobs 1``, each pinned to its share of the cores."""
    import subprocess
    import sys

    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // args.jobs)
    threads = args.threads or share
    base = [sys.executable, "-m", "timm_uscl.cli", "reproduce", "run", "--root", args.root]
    base += ["--data-root", args.data_root, "--epochs", str(args.epochs), "--image-size", str(args.image_size)]
    base += ["--precision", args.precision, "--device", args.device, "--online-every", str(args.online_every)]
    base += ["--eval-budget", args.eval_budget]
    base += ["--threads", str(threads), "--jobs", "1", *(["--stages", *args.stages] if args.stages else [])]

    def pinned(mine: set[int]) -> Callable[[], None]:
        return lambda: os.sched_setaffinity(0, mine)

    workers = []
    for i in range(args.jobs):
        mine = set(cores[(i * share) % len(cores) :][:share]) or set(cores)
        workers.append(subprocess.Popen(base, preexec_fn=pinned(mine)))
    codes = [w.wait() for w in workers]
    failed = [c for c in codes if c != 0]  # a worker killed by a signal returns a negative code
    return (failed[0] if failed[0] > 0 else 128 - failed[0]) if failed else 0
