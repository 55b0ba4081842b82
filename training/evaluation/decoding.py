"""Decoding a task's files into memory once: sampled video frames, images and masks as small grey uint8 rows.

Videos go through the pretraining decoder (:func:`..data.decode.read_frames`): frames are downsized inside
FFmpeg, so a 1024² (or 8000²) clip never becomes a full-resolution tensor, and evaluation sees exactly the
pixels pretraining does. A folder of images is a video too (its frames, in natural name order). Every file
that is missing, empty or does not decode stops the run with one line naming it and its metadata.

Masks (:class:`MaskRule`) are read as people store them: a binary mask is 0 for background and one other
value (1 or 255) for foreground; a label map holds one value per class and ``--mask-foreground V`` says which
value is the foreground. A mask whose values fit neither, or whose size is not its image's, is refused naming
the file (``--resize-masks`` stretches a mask to its image instead): a silent rule scored 0/1 masks as empty
(Dice 0.0) and stretched misaligned masks over the wrong pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.decode import eight_bit, read_frames
from ..data.folders import frame_files
from ..data.frames import FRAME_EXTENSIONS, frame_video
from ..errors import DataError, DecodeError, EvaluationError
from .tasks import Item, TaskData, TaskSpec, frame_indices

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "BINARY_FOREGROUNDS", "MaskRule", "load_task", "listing_of"]

IMAGE_SUFFIXES = FRAME_EXTENSIONS
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpeg", ".mpg", ".wmv", ".gif")
BINARY_FOREGROUNDS = (1, 255)  # the foreground value of a binary mask (its background is 0)
_RAW_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")  # values read as stored (P: palette index)


@dataclass(frozen=True)
class MaskRule:
    """Which mask pixels are foreground. ``foreground`` None: a binary mask (0 and one of
    :data:`BINARY_FOREGROUNDS`); a value: a label map whose pixels equal to it are foreground. ``resize``: stretch
    a mask of another size than its image instead of refusing it."""

    foreground: int | None = None
    resize: bool = False

    def __post_init__(self) -> None:
        if self.foreground is not None and not 1 <= self.foreground <= 65535:
            raise EvaluationError(
                f"--mask-foreground {self.foreground}: give the label map's foreground value, 1 to 65535 "
                "(0 is background)"
            )

    def foreground_of(self, values: np.ndarray, path: Path) -> np.ndarray:
        """The boolean foreground of a mask's stored ``values``; a binary rule refuses any other values."""
        if self.foreground is not None:
            return values == self.foreground
        found = np.unique(values)
        if len(found) > 2 or not set(found.tolist()) <= {0, *BINARY_FOREGROUNDS} or {1, 255} <= set(found.tolist()):
            shown = ", ".join(map(str, found[:8].tolist())) + (", ..." if len(found) > 8 else "")
            raise EvaluationError(
                f"{path}: mask values {{{shown}}} are not a binary mask (0 and 1, or 0 and 255; store masks as PNG, "
                "not JPEG); for a label map give --mask-foreground VALUE"
            )
        return values != 0


def listing_of(base: Path) -> Path:
    """Where a task's files are listed, for messages: its metadata.csv, else the folder itself."""
    return base / "metadata.csv" if (base / "metadata.csv").is_file() else base


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)


def _bad(path: Path, problem: str, where: Path | str | None) -> EvaluationError:
    source = where or "the task's metadata.csv"
    return EvaluationError(f"{path}: {problem}; replace the file or remove it from {source}")


def _check_exists(path: Path, where: Path | str | None) -> None:
    if not path.exists():
        raise _bad(path, "missing", where)
    if path.is_file() and path.stat().st_size == 0:
        raise _bad(path, "empty (0 bytes)", where)


def _load_image(path: Path, size: int) -> torch.Tensor:
    """A grey ``[1, size, size]`` uint8 image; JPEGs are already downscaled by the decoder (``draft``)."""
    with Image.open(path) as im:
        im.draft("L", (size, size))
        gray = eight_bit(im).convert("L")  # 16-bit and float scaled, not clipped
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(gray).copy())[None]


def _image(path: Path, size: int, where: Path | str | None) -> torch.Tensor:
    _check_exists(path, where)
    try:
        return _load_image(path, size)
    except (
        OSError,
        ValueError,
        Image.DecompressionBombError,
        DecodeError,
    ) as err:  # PIL's "cannot identify", truncation
        raise _bad(path, f"cannot be read as an image ({_reason(err)})", where) from None


def _mask(path: Path, image: Path, size: int, rule: MaskRule, where: Path | str | None) -> torch.Tensor:
    """A ``[1, size, size]`` uint8 0/1 mask: its foreground by ``rule`` at the stored size, then squashed to
    ``size`` as its image is (nearest). Its size must be its image's unless ``rule.resize``."""
    _check_exists(path, where)
    try:
        with Image.open(image) as im:
            image_size = im.size
        with Image.open(path) as m:
            mask_size = m.size
            values = np.asarray(m if m.mode in _RAW_MODES else m.convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise _bad(path, f"cannot be read as an image ({_reason(err)})", where) from None
    if mask_size != image_size and not rule.resize:
        raise EvaluationError(
            f"{path}: mask is {mask_size[0]}x{mask_size[1]} px, its image {image.name} {image_size[0]}x"
            f"{image_size[1]}; give the mask drawn on that image, or --resize-masks to stretch masks to their images"
        )
    fg = rule.foreground_of(values, path).astype(np.uint8)
    squashed = Image.fromarray(fg).resize((size, size), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(squashed).copy())[None]


def _frame_folder(folder: Path, k: int, size: int, where: Path | str | None) -> torch.Tensor:
    """Evenly spaced frames of a frame folder, read as pretraining reads them (natural name order, one decoder)."""
    try:
        frames = frame_files(folder, folder, str(where or folder))
    except DataError as err:
        raise EvaluationError(str(err)) from None
    if not frames:
        raise _bad(folder, f"a frame folder without images ({', '.join(IMAGE_SUFFIXES)})", where)
    bad: list[tuple[str, str]] = []
    video = frame_video([{"path": str(p)} for p in frames], folder.name, str(folder))
    try:
        picked = read_frames(video, lambda n: frame_indices(n, k), size, grayscale=True, bad_frames=bad)
    except DataError as err:
        raise _bad(folder, f"no frame reads ({_reason(err)})", where) from None
    if bad:  # evaluation scores every chosen frame: a bad one is an error, not a skip
        raise _bad(folder, f"frame {bad[0][0]} cannot be read as an image ({bad[0][1]})", where)
    return picked


def _video(path: Path, k: int, size: int, where: Path | str | None) -> torch.Tensor:
    """``[<=k, 1, size, size]`` evenly spaced frames, from a clip or a frame folder."""
    _check_exists(path, where)
    if path.is_dir():
        return _frame_folder(path, k, size, where)
    try:
        return read_frames(path, lambda n: frame_indices(n, k), size, grayscale=True)
    except (DataError, RuntimeError, ValueError, OSError) as err:  # DecodeError, and FFmpeg's own errors
        raise _bad(path, f"does not decode as a video ({_reason(err)})", where) from None


def load_task(
    spec: TaskSpec,
    items: Sequence[Item],
    size: int,
    frames_per_video: int,
    progress: bool = True,
    where: Path | str | None = None,
    masks: MaskRule = MaskRule(),
) -> TaskData:
    """Decode every item once. Images are squashed to a square (the reference's ``Resize((S, S))``); masks
    are read by ``masks``."""
    xs, ys, owner = [], [], []
    for i, it in enumerate(tqdm(items, desc=f"load {spec.name}", disable=not progress, leave=False)):
        if spec.kind == "video":
            frames = _video(it.path, frames_per_video, size, where)
            xs.append(frames)
            ys.append(torch.full((len(frames),), it.label, dtype=torch.int64))
            owner.append(torch.full((len(frames),), i, dtype=torch.int64))
            continue
        xs.append(_image(it.path, size, where)[None])
        if spec.kind == "segmentation":
            if it.mask is None:
                raise EvaluationError(f"{it.path}: a segmentation item without a mask; give its mask_file_name")
            ys.append(_mask(it.mask, it.path, size, masks, where)[None])
        else:
            ys.append(torch.tensor([it.label]))
        owner.append(torch.tensor([i]))
    return TaskData(spec, list(items), torch.cat(xs), torch.cat(ys), torch.cat(owner))
