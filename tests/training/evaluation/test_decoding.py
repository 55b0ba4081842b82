"""Evaluation decodes with the pretraining decoder, downsized inside FFmpeg (L11): a large clip costs about what a
small one does, and never a full-resolution frame tensor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from timm_uscl.training.data.decode import read_frames
from timm_uscl.training.evaluation.decoding import load_task
from timm_uscl.training.evaluation.tasks import TASKS, frame_indices, load_items

_PEAK = """
import json, resource, sys
from pathlib import Path
from timm_uscl.training.evaluation.decoding import load_task
from timm_uscl.training.evaluation.tasks import TASKS, Item

def peak_kib(path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = load_task(TASKS["pocus"], [Item(Path(path), 0, "g", 0)], size=32, frames_per_video=8, progress=False)
    assert tuple(data.x.shape[1:]) == (1, 32, 32), data.x.shape
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

peak_kib(sys.argv[1])  # warm-up: FFmpeg's libraries and first-call buffers
print(json.dumps({"small": peak_kib(sys.argv[1]), "large": peak_kib(sys.argv[2])}))
"""


def _large_clip(path: Path, size: int = 1024, frames: int = 8) -> Path:
    """A smooth 1024x1024 clip (fast to encode): 8 full-resolution RGB frames are 24 MiB, 96 MiB as float."""
    import av

    yy, xx = np.mgrid[:size, :size]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            g = ((xx + yy + 16 * i) % 256).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.repeat(g[..., None], 3, 2), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_a_large_clip_costs_about_the_memory_of_a_small_one(tmp_path: Path, synthetic_root: Path) -> None:
    large = _large_clip(tmp_path / "large.mp4")
    small = synthetic_root / "pocus" / "videos" / "covid_0.mp4"
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, str(small), str(large)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    # decoding at full size would hold 8 x 3 x 1024^2 bytes (24 MiB) and resize them as float (96 MiB more)
    assert peak["large"] - peak["small"] < 16 * 1024, peak


def test_video_rows_are_the_pretraining_decoders_frames(synthetic_root: Path) -> None:
    spec = TASKS["pocus"]
    items = load_items(spec, synthetic_root)[:3]
    data = load_task(spec, items, size=24, frames_per_video=3, progress=False)
    expected = [read_frames(it.path, lambda n: frame_indices(n, 3), 24) for it in items]
    assert torch.equal(data.x, torch.cat(expected))
    assert data.item.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_frame_indices_are_evenly_spaced_from_first_to_last() -> None:
    assert frame_indices(10, 4) == [0, 3, 6, 9]
    assert frame_indices(3, 8) == [0, 1, 2]


@pytest.mark.parametrize("task", ["busi", "busi_seg"])
def test_images_are_grey_rows_of_the_requested_size(synthetic_root: Path, task: str) -> None:
    spec = TASKS[task]
    data = load_task(spec, load_items(spec, synthetic_root), size=16, frames_per_video=2, progress=False)
    assert data.x.dtype == torch.uint8 and tuple(data.x.shape[1:]) == (1, 16, 16)
    if task == "busi_seg":
        assert data.y.dtype == torch.uint8 and set(data.y.unique().tolist()) <= {0, 1}
        assert data.y.shape == data.x.shape


def test_a_16_bit_image_is_evaluated_as_its_8_bit_twin_not_white(synthetic_root: Path, tmp_path: Path) -> None:
    """N3: ``convert("L")`` clipped 16-bit PNGs at 255 (macro-F1 34.7 instead of 52.9 on the same images)."""
    import shutil

    from PIL import Image

    root = Path(shutil.copytree(synthetic_root, tmp_path / "root"))
    spec = TASKS["busi"]
    want = load_task(spec, load_items(spec, root), size=32, frames_per_video=1, progress=False).x
    for png in (root / "busi" / "images").glob("*.png"):
        Image.fromarray(np.asarray(Image.open(png)).astype(np.uint16) * 257).save(png)
    assert Image.open(next((root / "busi" / "images").glob("*.png"))).mode == "I;16"
    got = load_task(spec, load_items(spec, root), size=32, frames_per_video=1, progress=False).x
    assert (got.int() - want.int()).abs().max() <= 1 and got.float().mean() < 200
