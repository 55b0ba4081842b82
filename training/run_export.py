"""The export of a finished run: the backbone as a Hub-ready folder whose card describes this run."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from timm_uscl import export, get_weights

from .config import TrainConfig
from .model import CMWNet, ContrastiveModel

__all__ = ["export_run"]

log = logging.getLogger(__name__)


def _is_table_data(source: str, datasets: tuple[str, ...]) -> bool:
    """A Hub id listed for the tag, or a local copy of it (a folder named like the dataset)."""

    def norm(name: str) -> str:
        return name.rsplit("/", 1)[-1].lower().replace("-", "_")

    return source in datasets or norm(str(Path(source))) in {norm(d) for d in datasets}


def export_run(config: TrainConfig, model: ContrastiveModel, cmw: CMWNet | None, out_dir: Path) -> Path:
    """The run's backbone as an export folder (``<out_dir>/export``), projection head and CMW-Net beside it."""
    entry = get_weights(config.export_tag)
    size = (3, config.image_size, config.image_size)
    stats = ((config.mean,) * 3, (config.std,) * 3)
    if entry.input_size != size or (entry.mean, entry.std) != stats:
        log.warning(
            "run differs from %s (input %s, mean/std %s): the export records the run's values", entry.name, size, stats
        )
        entry = dataclasses.replace(entry, input_size=size, mean=stats[0], std=stats[1])
    sources = [config.source] if isinstance(config.source, str) else list(config.source)
    if not all(_is_table_data(s, entry.datasets) for s in sources):  # never claim data the run did not see
        log.warning("run data %s is not %s's: the export names the run's data instead", sources, entry.name)
        entry = dataclasses.replace(
            entry,
            pretrain_data=", ".join(sources),
            datasets=(),
            pretrain_data_license="that of the data named above (not checked by the trainer): check it before sharing",
        )
    extra = {"projection_head.safetensors": model.head.state_dict()}
    if cmw is not None:
        extra["cmw_net.safetensors"] = cmw.state_dict()
    return export(model.backbone, out_dir / "export", entry, extra_files=extra)
