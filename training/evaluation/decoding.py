"""Decoding a task's files into memory once: sampled video frames, images and masks as small grey uint8 rows.

Videos go through the pretraining decoder (:func:`..data.decode.read_frames`): frames are downsized inside
FFmpeg, so a 1024² (or 8000²) clip never becomes a full-resolution tensor, and evaluation sees exactly the
pixels pretraining does. A folder of images is a video too (its frames, in natural name order). Every file
that is missing, empty or does not decode stops the run with one line naming it and its metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
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

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "load_task", "listing_of"]

IMAGE_SUFFIXES = FRAME_EXTENSIONS
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpeg", ".mpg", ".wmv", ".gif")


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


def _load_image(path: Path, size: int, nearest: bool = False) -> torch.Tensor:
    """A grey ``[1, size, size]`` uint8 image; JPEGs are already downscaled by the decoder (``draft``)."""
    with Image.open(path) as im:
        im.draft("L", (size, size))
        resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
        gray = eight_bit(im).convert("L").resize((size, size), resample)  # 16-bit and float scaled, not clipped
        return torch.from_numpy(np.asarray(gray).copy())[None]


def _image(path: Path, size: int, where: Path | str | None, nearest: bool = False) -> torch.Tensor:
    _check_exists(path, where)
    try:
        return _load_image(path, size, nearest)
    except (
        OSError,
        ValueError,
        Image.DecompressionBombError,
        DecodeError,
    ) as err:  # PIL's "cannot identify", truncation
        raise _bad(path, f"cannot be read as an image ({_reason(err)})", where) from None


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
) -> TaskData:
    """Decode every item once. Images are squashed to a square (the reference's ``Resize((S, S))``)."""
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
            ys.append((_image(it.mask, size, where, nearest=True) > 127).to(torch.uint8)[None])
        else:
            ys.append(torch.tensor([it.label]))
        owner.append(torch.tensor([i]))
    return TaskData(spec, list(items), torch.cat(xs), torch.cat(ys), torch.cat(owner))
