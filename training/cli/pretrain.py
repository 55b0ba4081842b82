"""``timm-uscl pretrain``: the bundled Meta-USCL trainer (import-light: the work happens in the handler).

Flags have no defaults of their own: a flag left out keeps the preset's value, which comes from the config
dataclasses (:class:`~timm_uscl.training.config.TrainConfig`) and the preset file.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from timm_uscl.configs import PRESETS

from ..config import PRECISIONS

if TYPE_CHECKING:
    from ..config import TrainConfig

_FLAGS = {  # command-line flag -> config key (anything else: --set key=value)
    "data": "source",
    "out": "out_dir",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "image_size": "image_size",
    "workers": "num_workers",
    "device": "device",
    "max_steps": "max_steps",
    "arch": "arch",
    "lr": "lr",
    "online_eval": "online_eval",
    "precision": "precision",
    "threads": "threads",
    "export_tag": "export_tag",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain a backbone on ultrasound videos (Meta-USCL, USCL or SimCLR) and export it",
        description="Defaults reproduce the Meta-USCL paper recipe on the Hub dataset jannisborn/COVID-BLUES "
        "(decoded once into a frame store on a GPU, streamed on a CPU). Point --data at a local folder of videos "
        "or frame folders to train offline.",
    )
    p.add_argument("--preset", default="meta_uscl", choices=PRESETS)
    p.add_argument("--config", default=None, help="YAML file of config keys, applied over the preset")
    p.add_argument("--data", help="Hub dataset id, local folder of videos or of frame folders, or parquet glob")
    p.add_argument("--out", help="run folder (checkpoints, metrics, plots, export)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="videos (pairs) per step and process")
    p.add_argument("--image-size", type=int)
    p.add_argument("--workers", type=int, help="DataLoader workers decoding videos")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--arch", help="timm architecture of the backbone (default resnet18_uscl)")
    p.add_argument("--lr", type=float)
    p.add_argument(
        "--export-tag",
        metavar="TAG",
        help="your name for the export, <arch>.TAG (a-z, 0-9, _ and -; default: the --out folder's name)",
    )
    p.add_argument(
        "--online-eval",
        metavar="TASK|DIR",
        help="every online_every epochs (--set online_every=5), a kNN and linear probe of the frozen backbone on a "
        "labelled set: a built-in task (pocus, covid_blues, busi) or a --task-dir folder",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32, bf16 (autocast), or auto (the default: bf16 on GPUs with bf16 and CPUs with AVX512-BF16 / AMX)",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default 0: every core this process may use)")
    p.add_argument("--no-meta", action="store_true", help="turn CMW-Net meta-weighting off")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key, e.g. --set meta_interval=2 --set 'exclude={fold: 0}'",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt (same config)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --out (its files are listed, then removed)"
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar: one log line per epoch (loss, pairs/s, run ETA)"
    )
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated run config a parsed ``pretrain`` command line asks for (preset, file, flags, ``--set``);
    nothing runs (the README test checks its commands with it)."""
    from ..config import load_config, parse_overrides

    overrides = {key: getattr(args, flag) for flag, key in _FLAGS.items() if getattr(args, flag) is not None}
    for flag, key, value in (("no_meta", "meta", False),):
        if getattr(args, flag):
            overrides[key] = value
    overrides.update(parse_overrides(args.overrides))
    return load_config(args.preset, args.config, overrides)


def _run(args: argparse.Namespace) -> int:
    import logging

    from ..engine import pretrain

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    result = pretrain(config, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if result.export_dir is not None:
        print(
            f"trained {result.steps} steps; export: {result.export_dir} "
            f"(load with timm.create_model('local-dir:{result.export_dir}', pretrained=True))"
        )
    return 0
