"""``timm-uscl evaluate``: downstream evaluation of a backbone. Import-light: the work is in :mod:`..evaluation`."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from ..errors import EvaluationError
from ..evaluation.config import BUDGETS, DEFAULT_TASKS, INITS, PRECISIONS, PROTOCOLS, TASK_KINDS, EvalConfig

__all__ = ["register"]

_DEFAULTS = {f.name: f.default for f in fields(EvalConfig)}


def _check_outputs(*paths: str | None) -> None:
    """Refuse an output whose folder is missing before hours of evaluation, not after."""
    for p in paths:
        if p and not Path(p).expanduser().resolve().parent.is_dir():
            raise EvaluationError(f"{p}: its folder does not exist; create it first")


def _recorded_data(model: str) -> list[str]:
    """The pretraining folders an export's record names (its ``run`` fact ``data``), to flag evaluation items the
    backbone saw; none for anything but a local export written by the trainer."""
    import json

    from timm_uscl.record import RECORD_KEY

    folder = Path(model.removeprefix("local-dir:")).expanduser()
    try:
        record = json.loads((folder / "config.json").read_text()).get(RECORD_KEY) or {}
    except (OSError, ValueError, AttributeError):
        return []
    facts = dict(pair for pair in record.get("run", []) if isinstance(pair, list) and len(pair) == 2)
    return [s.strip() for s in str(facts.get("data", "")).split(", ") if s.strip()]


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import logging

    from timm_uscl.outdir import write_text_atomic

    from ..evaluation import card_results, evaluate, results_to_markdown
    from ..evaluation.metrics import strict_json
    from ..evaluation.predictions import prediction_tables, predictions_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _check_outputs(args.out, args.markdown)
    if args.plots:  # an optional package and a folder: checked now, not after the evaluation
        from ..evaluation.plots import check_plotting

        check_plotting(args.plots)
    if args.card:  # validated before anything is evaluated; the plugin owns what an export must hold
        from timm_uscl.export_folder import check_export

        check_export(args.card)
    results = evaluate(
        args.model,
        tasks=args.tasks,
        data_root=args.data_root,
        protocol=args.protocol,
        folds=args.folds,
        arch=args.arch,
        pretrained=not args.random_init,
        task_dir=args.task_dir,
        task_kind=args.task_kind,
        group_column=args.group_column,
        card_export=args.card,
        budget=args.budget,
        seeds=args.seeds,
        image_size=args.image_size,
        frames_per_video=args.frames_per_video,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        select=args.select,
        max_items=args.max_items,
        device=args.device,
        seed=args.seed,
        progress=not args.no_progress,
        task_cache=args.task_cache,
        init=args.init,
        precision=args.precision,
        work_dir=args.work_dir,
        save_masks=args.save_masks,
        mask_foreground=args.mask_foreground,
        resize_masks=args.resize_masks,
        label_column=args.label_column,
        pretrain_data=tuple(args.pretrain_data or _recorded_data(args.model)) or None,
    )
    markdown = results_to_markdown(results)
    if args.out:  # strict JSON (null, never NaN), replaced whole: a killed run leaves no half-written file
        write_text_atomic(Path(args.out), strict_json(results))
        for task, table in prediction_tables(results).items():  # per-item rows beside it, for spreadsheets
            write_text_atomic(predictions_path(Path(args.out), task), table)
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    if args.plots:
        from ..evaluation.plots import write_plots

        for path in write_plots(results, args.plots):
            print(f"wrote {path}")
    if args.card:
        from timm_uscl.export_folder import update_card

        card = update_card(args.card, card_results(results), measured_sha256=results["weights_sha256"])
        print(f"updated {card}")
    print(markdown, end="")
    return 0


def _add_task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tasks",
        nargs="+",
        help=f"built-in tasks: {', '.join(DEFAULT_TASKS)}, covid_blues_severity (default: "
        "all but covid_blues_severity; none with --task-dir)",
    )
    p.add_argument(
        "--task-dir",
        metavar="DIR",
        help="your own task: DIR/<class>/ folders of images, videos or frame folders, or DIR/metadata.csv with "
        "file_name and label (or mask_file_name) columns",
    )
    p.add_argument("--task-kind", choices=TASK_KINDS, help="kind of --task-dir (default: detected from its layout)")
    p.add_argument(
        "--group-column", metavar="COL", help="metadata.csv column keeping a patient in one fold (default: group)"
    )
    p.add_argument("--label-column", metavar="COL", help="metadata.csv column holding the class (default: label)")
    p.add_argument("--protocol", nargs="+", default=list(PROTOCOLS), help="finetune and/or linear")
    p.add_argument("--folds", nargs="+", type=int, help="test folds (default: all of each task's folds)")
    p.add_argument(
        "--data-root", help="folder holding pocus/ covid_blues/ busi/ (default: $TIMM_USCL_DATA or ../shared/data)"
    )
    p.add_argument("--task-cache", metavar="DIR", help="keep decoded tasks here; a later run decodes nothing")
    p.add_argument(
        "--mask-foreground",
        type=int,
        metavar="VALUE",
        help="segmentation masks are label maps: pixels of this value are foreground (default: binary masks, 0 "
        "with 1 or 255)",
    )
    p.add_argument(
        "--resize-masks",
        action="store_true",
        help="stretch a mask of another size than its image to the image (default: refuse it, naming the file)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``timm-uscl`` command line (defaults: :class:`EvalConfig`)."""
    p = subparsers.add_parser(
        "evaluate",
        help="fine-tune / linear-probe a backbone on POCUS, COVID-BLUES, BUSI (+ segmentation) or your own data",
        description="Evaluate a backbone on fixed grouped folds; prints a markdown table, --out writes the JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "model",
        help="timm name (resnet18_uscl.<tag>), hf-hub:REPO, local-dir:DIR, a .safetensors "
        "backbone (with --arch) or a `timm-uscl pretrain` checkpoint (last.pt)",
    )
    p.add_argument("--arch", help="timm architecture of a .safetensors checkpoint (e.g. resnet18_uscl)")
    _add_task_arguments(p)
    p.add_argument(
        "--budget",
        choices=list(BUDGETS),
        help="a named budget setting image size, frames, per-task epochs and seeds: "
        + "; ".join(f"{name}: {b.description}" for name, b in BUDGETS.items()),
    )
    # None: the budget's value, else EvalConfig's (a budget refuses a setting it fixes)
    p.add_argument(
        "--image-size", type=int, help=f"image side in px (none: the budget's, else {_DEFAULTS['image_size']})"
    )
    p.add_argument(
        "--frames-per-video",
        type=int,
        help=f"evenly spaced frames sampled per video (none: the budget's, else {_DEFAULTS['frames_per_video']})",
    )
    p.add_argument("--epochs", type=int, help=f"fine-tuning epochs (none: the budget's, else {_DEFAULTS['epochs']})")
    p.add_argument(
        "--seeds",
        type=int,
        help=f"repeat every fine-tune with seeds SEED, SEED+1, ... (none: the budget's, else {_DEFAULTS['seeds']})",
    )
    p.add_argument("--batch-size", type=int, help="default: 128 (last-block fine-tune), 32 (whole network)")
    p.add_argument("--lr", type=float, help="default: 0.01 (last-block fine-tune), 3e-4 (whole network)")
    p.add_argument(
        "--select",
        choices=["final", "val"],
        default=_DEFAULTS["select"],
        help="reported epoch: the last, or the best on an inner patient-grouped validation split",
    )
    p.add_argument("--max-items", type=int, help="at most this many videos/images per fold (smoke runs)")
    p.add_argument("--device", default=_DEFAULTS["device"], help="cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=_DEFAULTS["seed"])
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=_DEFAULTS["precision"],
        help="bf16 autocast of the forwards, or fp32; auto: bf16 where the CPU/GPU computes it natively (recorded "
        "in the results; compare refuses to pair different precisions)",
    )
    p.add_argument(
        "--work-dir",
        metavar="DIR",
        help="keep each finished (task, protocol, fold, seed) here; a rerun of the same settings computes only the "
        "missing ones (a killed evaluation resumes)",
    )
    p.add_argument("--random-init", action="store_true", help="do not load pretrained weights (baseline)")
    p.add_argument(
        "--init",
        choices=INITS,
        default=_DEFAULTS["init"],
        help="random init: torchvision (every BatchNorm weight 1) or timm (each block's last BatchNorm weight 0)",
    )
    p.add_argument(
        "--pretrain-data",
        nargs="+",
        metavar="DIR",
        help="the folders the backbone was pretrained on: evaluation items also in them are warned about (default: "
        "the data an export's record names)",
    )
    p.add_argument(
        "--out",
        help="write the results JSON here, and each task's per-item predictions beside it (OUT.TASK.predictions.csv)",
    )
    p.add_argument("--markdown", help="write the markdown table here")
    p.add_argument(
        "--save-masks",
        metavar="DIR",
        help="segmentation: write every test image's predicted mask as a 0/255 PNG at the image's size, "
        "DIR/TASK/foldF_seedS/<image path>.png (DIR must be new or empty; filled when the evaluation ends)",
    )
    p.add_argument(
        "--plots",
        metavar="DIR",
        help="draw each task's TASK_confusion.png (summed over folds and seeds) and TASK_folds.png (score per fold, "
        "one marker per seed) into DIR (needs matplotlib)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no tqdm bars (each finished fold is logged with its scores)"
    )
    p.add_argument(
        "--card", metavar="EXPORT", help="write the results into this export's model card (MODEL must be its weights)"
    )
    p.set_defaults(func=_cmd_evaluate)
