"""Predicted segmentation masks as PNG files (``timm-uscl evaluate --save-masks DIR``).

Why: a mask is what a clinical measurement is made from (a head circumference, a lesion's area or axes), and
Dice alone cannot be checked by eye. Every test image of every segmentation fold x seed gets its predicted mask
at the reported epoch, as ``DIR/<task>/fold<F>_seed<S>/<the image's path in its task folder>.png``: grey 0/255,
at the image's own width and height (the mask predicted at ``--image-size`` is stretched back as the image was
squashed, bilinearly, and thresholded at half). The names keep the task folder's layout, so two images called
``a.png`` in different folders never meet; two images that would give one name (``a.jpg`` and ``a.png``) are
refused before anything runs.

DIR is never overwritten (:func:`timm_uscl.outdir.check_new_dir`): it must be new or empty, and the masks appear
there once the whole evaluation has finished. Until then they are written unit by unit, each fold x seed folder
renamed into place when complete: into a staging folder inside DIR, or with ``--work-dir`` into
``<work_dir>/masks/``, before the unit's own file (:mod:`.units`), so a resumed evaluation has the masks of every
unit it loads; a unit kept without masks (computed without ``--save-masks``) is computed again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from timm_uscl.outdir import check_new_dir, staging

from ..errors import EvaluationError
from .tasks import Item, TaskSpec, item_name

__all__ = ["MaskWriter"]

Source = tuple[TaskSpec, Path, list[Item]]


def _png_names(spec: TaskSpec, base: Path, items: Sequence[Item]) -> dict[Path, str]:
    """Each image's mask file name (its path in the task folder, ``.png``); names two images share are refused."""
    names: dict[Path, str] = {}
    seen: dict[str, Path] = {}
    for it in items:
        name = PurePosixPath(item_name(it, base).lstrip("/")).with_suffix(".png").as_posix()
        if name in seen:
            raise EvaluationError(
                f"--save-masks: {seen[name]} and {it.path} of task {spec.name!r} would both be saved as {name}; "
                "rename one of them"
            )
        names[it.path], seen[name] = name, it.path
    return names


def _write_png(path: Path, mask: np.ndarray, image: Path) -> None:
    """A boolean mask at the evaluated size as 0/255 at ``image``'s own size."""
    with Image.open(image) as im:
        size = im.size
    grey = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(np.asarray(grey) >= 128, 255, 0).astype(np.uint8)).save(path)


class MaskWriter:
    """The masks of one evaluation. Built before anything is decoded or trained (every check is made then);
    :meth:`open` spans the evaluation and, when it ends without error, fills DIR."""

    def __init__(self, out: str | Path, sources: Sequence[Source], work_dir: str | Path | None = None) -> None:
        self.out = check_new_dir(out, "--save-masks")
        seg = [(spec, base, items) for spec, base, items in sources if spec.kind == "segmentation"]
        if not seg:
            tasks = ", ".join(spec.name for spec, _, _ in sources) or "none"
            raise EvaluationError(f"--save-masks: no segmentation task is evaluated (tasks: {tasks}); drop it")
        self.names = {spec.name: _png_names(spec, base, items) for spec, base, items in seg}
        self.work_dir = None if work_dir is None else Path(work_dir).expanduser()
        self.root: Path | None = None  # where unit folders are written while the evaluation runs
        self.units: list[Path] = []  # unit folders (relative to root) of this evaluation, for DIR

    def _unit(self, task: str, fold: int, seed: int) -> Path:
        return Path(task) / f"fold{fold}_seed{seed}"

    def has(self, task: str, fold: int, seed: int) -> bool:
        """Whether the unit's masks are already written (a unit kept in ``--work-dir`` without them is recomputed)."""
        return self.root is not None and (self.root / self._unit(task, fold, seed)).is_dir()

    def write(self, task: str, fold: int, seed: int, *, items: Sequence[Item], masks: np.ndarray) -> None:
        """One unit's masks (``masks[k]`` of ``items[k]``), renamed into place only when all are written; an earlier
        copy (its unit file lost after the masks were written, so the unit ran again) is replaced."""
        assert self.root is not None, "MaskWriter.write outside open()"
        final = self.root / self._unit(task, fold, seed)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            for it, mask in zip(items, masks, strict=True):
                _write_png(tmp / self.names[task][it.path], mask, it.path)
            if final.is_dir():  # this evaluation's own unit folder (work dir or staging), never the user's DIR
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def record(self, task: str, fold: int, seed: int) -> None:
        """The unit belongs to this evaluation: its folder goes to DIR at the end."""
        self.units.append(self._unit(task, fold, seed))

    def _publish(self, root: Path) -> None:
        check_new_dir(self.out, "--save-masks")  # still empty: nothing put there meanwhile is overwritten
        for unit in self.units:
            (self.out / unit.parent).mkdir(parents=True, exist_ok=True)
            shutil.copytree(root / unit, self.out / unit)

    @contextmanager
    def open(self) -> Iterator[MaskWriter]:
        if self.work_dir is not None:  # kept with the units, so a resumed evaluation has them
            self.root = self.work_dir / "masks"
            self.root.mkdir(exist_ok=True)
            yield self
            self._publish(self.root)
            return
        with staging(self.out) as stage:  # inside DIR: an evaluation that fails leaves DIR as it was
            self.root = stage
            yield self
            self._publish(stage)
