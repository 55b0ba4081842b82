"""The export of a finished run: the backbone as a Hub-ready folder whose card describes THIS run.

Why: a weights-table row describes the weights of its own recipe and budget (e.g. "COVID-BLUES at 64px"), and its
measured results belong to the weights they were measured on. A 2-step, 32 px smoke run on the test fixtures exported
under that row's tag used to inherit both. Here the row only names the architecture and the Hub tag; the card's
description, data, input size, recipe and a "Training run" table (data, image size, epochs, steps, recipe, init, BN
batching, seed, commit) come from this run, and it carries NO evaluation results: ``timm-uscl evaluate
local-dir:EXPORT --card EXPORT`` measures these very weights and adds them (checked by sha256).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safetensors import SafetensorError

from timm_uscl import export, get_weights
from timm_uscl.weights import WeightsEntry

from .config import TrainConfig
from .errors import RunFolderError
from .model import CMWNet, ContrastiveModel

__all__ = ["export_run", "run_entry"]


def _is_table_data(source: str, datasets: tuple[str, ...]) -> bool:
    """A Hub id listed for the tag, or a local copy of it (a folder named like the dataset)."""

    def norm(name: str) -> str:
        return name.rstrip("/").rsplit("/", 1)[-1].lower().replace("-", "_")

    return source in datasets or norm(str(Path(source))) in {norm(d) for d in datasets}


def _recipe(config: TrainConfig) -> str:
    optimiser = f"{config.optimizer} lr {config.lr:g}, weight decay {config.weight_decay:g}"
    meta = f"CMW-Net meta-weighting every {config.meta_interval} step(s)" if config.meta else "no meta-weighting"
    return (
        f"preset {config.preset}: {config.data.pair_type} pairs, {meta}, {optimiser}, schedule {config.schedule} "
        f"({config.warmup_epochs} warm-up epochs), batch {config.data.batch_size} videos, "
        f"NT-Xent tau {config.temperature:g}; timm-uscl trainer"
    )


def run_entry(config: TrainConfig, steps: int, commit: str | None, epochs_done: int | None = None) -> WeightsEntry:
    """The card facts of this run's export: the ``export_tag`` row's architecture and tag, everything else the run's
    (``epochs_done``: epochs completed, when ``max_steps`` stopped the run before ``config.epochs``)."""
    row = get_weights(config.export_tag)
    sources = [config.data.source] if isinstance(config.data.source, str) else list(config.data.source)
    table_data = all(_is_table_data(s, row.datasets) for s in sources)
    data = row.pretrain_data if table_data else ", ".join(sources)
    size = config.data.image_size
    done = config.epochs if epochs_done is None else epochs_done
    stopped = "" if done == config.epochs else f" of {config.epochs} planned (stopped by max_steps)"
    facts = (
        ("data", ", ".join(sources)),
        ("image size", f"{size} px"),
        ("epochs", f"{done}{stopped}"),
        ("steps", str(steps)),
        ("recipe", _recipe(config)),
        ("initialisation", config.init),
        ("BatchNorm batches", config.bn_views),
        ("precision", config.precision),  # resolved (fp32 or bf16 autocast): what the steps computed in
        ("data path", "frame store" if config.data.store in ("device", "host") else "streamed from the files"),
        ("seed", str(config.data.seed)),
        ("commit", commit or "unknown (not a git checkout)"),
    )
    return dataclasses.replace(
        row,
        description=(
            f"{row.arch.split('_')[0]} pretrained by `timm-uscl pretrain` (preset {config.preset}) on "
            f"{', '.join(sources)} at {size}px: {done} epochs{stopped}, {steps} steps"
        ),
        input_size=(3, size, size),
        mean=(config.data.mean,) * 3,
        std=(config.data.std,) * 3,
        recipe=_recipe(config),
        pretrain_data=data,
        datasets=row.datasets if table_data else (),
        pretrain_data_license=row.pretrain_data_license
        if table_data
        else "that of the data named above (not checked by the trainer): check it before sharing",
        results=(),
        results_sha256=None,
        run=facts,
    )


def export_run(
    config: TrainConfig,
    model: ContrastiveModel,
    cmw: CMWNet | None,
    out_dir: Path,
    steps: int,
    commit: str | None,
    epochs_done: int | None = None,
) -> Path:
    """The run's backbone as ``<out_dir>/export``, projection head and CMW-Net beside it. The run owns its folder
    (see :mod:`.run_folder`), so an export left by an earlier stretch of this run (before a resume) is replaced."""
    extra = {"projection_head.safetensors": model.head.state_dict()}
    if cmw is not None:
        extra["cmw_net.safetensors"] = cmw.state_dict()
    target = out_dir / "export"
    try:
        entry = run_entry(config, steps, commit, epochs_done)
        return export(model.backbone, target, entry, extra_files=extra, overwrite=True)
    except (OSError, SafetensorError) as err:  # a full disk: torch/safetensors report it in their own words
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0][:160]
        raise RunFolderError(
            f"{target}: the export could not be written ({reason}); last.pt is complete, so free space and run "
            f"the same command with --resume to export again"
        ) from err
