"""The export of a finished run: the backbone as a Hub-ready folder named and described after THIS run.

Why: an export named after a built-in tag (``metauscl_covidblues_64``) was installed, listed and loaded as the
project's weights, and a 2-step smoke run inherited that row's description. The export is named with a user tag
(``config.export_tag``, by default the run folder's name: ``--out runs/smoke`` exports ``resnet18_uscl.smoke``), and
every fact on its card comes from this run: description, data and that data's licence (known terms for a dataset
of :data:`timm_uscl.weights.KNOWN_DATA`, else "not checked"), input size, recipe and a "Training run" table (data,
image size, epochs, steps, recipe, init, BN batching, seed, commit). It carries NO evaluation results: ``timm-uscl
evaluate local-dir:EXPORT --card EXPORT`` measures these very weights and adds them (checked by sha256).
"""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError

from timm_uscl import export
from timm_uscl.names import safe_tag, user_entry
from timm_uscl.weights import KNOWN_DATA, DataFacts, WeightsEntry

from .config import TrainConfig
from .errors import RunFolderError
from .model import CMWNet, ContrastiveModel

__all__ = ["export_run", "run_entry", "run_name"]

_UNCHECKED = "that of the data named above (not checked by the trainer): check it before sharing the weights"


def _known_data(sources: list[str]) -> DataFacts | None:
    """The known dataset every source is (a Hub id, or a local copy: a folder named like it), else None."""

    def norm(name: str) -> str:
        return name.rstrip("/").rsplit("/", 1)[-1].lower().replace("-", "_")

    for facts in KNOWN_DATA.values():
        if all(s == facts.hub_id or norm(str(Path(s))) == norm(facts.hub_id) for s in sources):
            return facts
    return None


def run_name(config: TrainConfig) -> str:
    """``<arch>.<tag>`` of the run's export: ``export_tag``, else a tag made from the run folder's name."""
    tag = config.export_tag or safe_tag(Path(config.out_dir).resolve().name)
    return f"{config.arch}.{tag}"


def _recipe(config: TrainConfig) -> str:
    optimiser = f"{config.optimizer} lr {config.lr:g}, weight decay {config.weight_decay:g}"
    meta = f"CMW-Net meta-weighting every {config.meta_interval} step(s)" if config.meta else "no meta-weighting"
    return (
        f"preset {config.preset}: {config.data.pair_type} pairs, {meta}, {optimiser}, schedule {config.schedule} "
        f"({config.warmup_epochs} warm-up epochs), batch {config.data.batch_size} videos, "
        f"NT-Xent tau {config.temperature:g}; timm-uscl trainer"
    )


def run_entry(config: TrainConfig, steps: int, commit: str | None, epochs_done: int | None = None) -> WeightsEntry:
    """The card facts of this run's export, all of them the run's (``epochs_done``: epochs completed, when
    ``max_steps`` stopped the run before ``config.epochs``)."""
    data = config.data
    sources = [data.source] if isinstance(data.source, str) else list(data.source)
    known = _known_data(sources)
    size = data.image_size
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
        ("seed", str(data.seed)),
        ("commit", commit or "unknown (not a git checkout; see the timm-uscl version on the card)"),
    )
    return user_entry(
        run_name(config),
        description=(
            f"{config.arch.split('_')[0]} pretrained by `timm-uscl pretrain` (preset {config.preset}) on "
            f"{', '.join(sources)} at {size}px: {done} epochs{stopped}, {steps} steps"
        ),
        input_size=(3, size, size),
        mean=(data.mean,) * 3,
        std=(data.std,) * 3,
        recipe=_recipe(config),
        pretrain_data=known.description if known else ", ".join(sources),
        pretrain_data_license=known.license_terms if known else _UNCHECKED,
        license=known.weights_license if known else "unknown",
        origin="trainer",
        run=facts,
        datasets=(known.hub_id,) if known else (),
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
