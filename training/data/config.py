"""The data pipeline's settings: one dataclass, each default stated once (the trainer's config holds one): here, or
for the augmentation (size, crop, jitter, mean/std), in :class:`~.augment.AugmentConfig`, which this one builds.

Defaults are the Meta-USCL reference (64 px, crop scale 0.7, jitter 0.8, mean/std 0.18/0.24) on the public Hub
copy of COVID-BLUES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from .augment import AugmentConfig
from .decode import DECODERS
from .pairs import TRAINING_PAIR_TYPES
from .sources import VIDEO_EXTENSIONS, SourceSpec

__all__ = ["DataConfig", "MIN_IMAGE_SIZE"]

_AUGMENT = AugmentConfig()  # the augmentation defaults are AugmentConfig's (the evaluation's crops use it alone)
MIN_IMAGE_SIZE = 8
"""The smallest frame side the pipeline accepts: below it crops and a ResNet's stride-32 stem have nothing left."""


@dataclass
class DataConfig:
    """Everything the pipeline needs; defaults are the Meta-USCL reference (64 px, s1 0.7, s2 0.8, 0.18/0.24).

    ``source``: a folder of videos or of frame folders (``root/<video>/<frame>.png``; optional
    ``metadata.csv``), a Hub dataset id, a parquet glob, or a list of these (layouts: :mod:`.sources`).
    ``video_column``: the column of videos, of lists of frame images, or (with ``group_column``) of one frame
    image per row. ``group_column``: the column naming each image's video, for image datasets (one frame per row);
    ``frame_column``: the frames' order within a video (default: natural file-name order, frame2 before frame10).
    ``filters``/``exclude``: ``{column: value or list}`` kept / dropped (e.g.
    ``exclude={"fold": 0}``). ``meta_group_by``: a column (e.g. ``"patient"``) whose values, instead of file
    names, decide the meta split. For USCL use ``pair_type="uscl", mean=0.5, std=0.25, crop_scale=0.8,
    jitter_strength=1.0, image_size=224``.
    """

    source: str | list[str] = "jannisborn/COVID-BLUES"
    pair_type: str = "metauscl"
    image_size: int = _AUGMENT.size
    batch_size: int = 32
    num_workers: int = 2
    meta_fraction: float = 0.2
    meta_batch_size: int = 32
    seed: int = 0
    max_dist: int = 999
    crop_scale: float = _AUGMENT.crop_scale[0]  # the smallest crop area; the largest is the whole frame
    crop_ratio: tuple[float, float] = _AUGMENT.crop_ratio
    jitter_strength: float = _AUGMENT.jitter_strength
    mean: float = _AUGMENT.mean
    std: float = _AUGMENT.std
    filters: dict[str, Any] | None = None
    exclude: dict[str, Any] | None = None
    meta_group_by: str | None = None
    split: str = "train"
    video_column: str = "video"
    source_column: str = "source"
    key_column: str | None = None
    group_column: str | None = None  # image datasets: the video id of each image row (see sources.LAYOUTS)
    frame_column: str | None = None  # with group_column: the frames' order (default: natural file-name order)
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    grayscale: bool = True
    shuffle_buffer: int = 64
    drop_last: bool = True
    cache_dir: str | None = None
    timeout: float = 300.0
    # the video decoder (training/data/decode.py): auto = the first of torchcodec, pyav, opencv that can open files
    decoder: str = "auto"
    # the frame store (training/data/store.py): every clip decoded once into one tensor, pairs sampled on the device.
    # auto: the store on the training device (GPU or CPU) when the decoded frames fit store_budget_mb, else (on a
    # CPU) the streaming pipeline; device: frames on the training device; host: frames in (pinned) host memory,
    # gathered there per step; off: streaming
    store: str = "auto"
    # memory the decoded frames may take: on a GPU, past it they stay in pinned host memory; on a CPU (where they
    # also take at most half the available RAM), past it store=auto streams from the files instead
    store_budget_mb: float = 16384.0
    store_file: str | None = None  # decoded frames on disk: loaded when it exists, else written after the decode

    def __post_init__(self) -> None:
        if self.pair_type not in TRAINING_PAIR_TYPES:
            raise DataError(f"pair_type={self.pair_type!r}: choose one of {list(TRAINING_PAIR_TYPES)}")
        if self.max_dist < 2:
            raise DataError(f"max_dist={self.max_dist}: needs >= 2 (two distinct offsets)")
        if not 0.0 <= self.meta_fraction < 1.0:
            raise DataError(f"meta_fraction={self.meta_fraction}: must be in [0, 1)")
        if self.meta_batch_size < 2:  # BatchNorm cannot train on one sample, NT-Xent needs a negative
            raise DataError(f"meta_batch_size={self.meta_batch_size}: needs >= 2")
        if self.image_size < MIN_IMAGE_SIZE:  # caught here, not as "every video failed to decode"
            raise DataError(
                f"image_size={self.image_size}: needs at least {MIN_IMAGE_SIZE} pixels (64 is the reference)"
            )
        if self.frame_column and not self.group_column:
            raise DataError(
                f"frame_column={self.frame_column!r} orders the image rows of one video: set group_column to the "
                "column naming each image's video (frame folders and lists of images play in their own order)"
            )
        if self.decoder != "auto" and self.decoder not in DECODERS:
            raise DataError(f"decoder={self.decoder!r}: choose one of auto, {', '.join(DECODERS)}")

    def sources(self) -> list[SourceSpec]:
        srcs = [self.source] if isinstance(self.source, str) else list(self.source)
        return [
            SourceSpec(
                s,
                self.split,
                self.video_column,
                self.source_column,
                self.key_column,
                self.extensions,
                self.group_column,
                self.frame_column,
            )
            for s in srcs
        ]

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            size=self.image_size,
            crop_scale=(self.crop_scale, 1.0),
            crop_ratio=(self.crop_ratio[0], self.crop_ratio[1]),
            jitter_strength=self.jitter_strength,
            mean=self.mean,
            std=self.std,
        )
