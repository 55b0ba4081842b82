"""Synthetic evaluation data, made per session (never committed): task folders shaped like shared/data's
pocus/, covid_blues/ and busi/, and user task folders (``--task-dir``) made from the licence-cleared fixtures."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clips import make_clip

POCUS_CLASSES = ("covid", "pneumonia", "regular")
BUSI_CLASSES = ("benign", "malignant", "normal")


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _edit_csv(path: Path, edit: Callable[[list[dict[str, str]]], list[dict[str, str]]]) -> None:
    """Rewrite a metadata.csv through ``edit`` (rows as dicts, header order kept)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    rows = edit(rows)
    header = [k for k in header if any(k in r for r in rows)]  # a column the edit removed goes
    header += [k for k in dict.fromkeys(k for r in rows for k in r) if k not in header]
    _write_csv(path, header, [[r.get(k, "") for k in header] for r in rows])


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _speckle(rng: np.random.Generator, h: int, w: int, level: int) -> np.ndarray:
    return np.clip(rng.rayleigh(0.3, (h, w)) * 60 + level, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pocus/ (15 convex clips + 2 outside the eval set), covid_blues/ (10 clips of 10 patients), busi/ (15 images
    with masks): one item per class and fold, with the real metadata.csv columns."""
    root = tmp_path_factory.mktemp("eval_root")
    (root / "pocus" / "videos").mkdir(parents=True)
    rows: list[list[object]] = []
    for fold in range(5):
        for c, label in enumerate(POCUS_CLASSES):
            name = f"videos/{label}_{fold}.mp4"
            make_clip(root / "pocus" / name, size=32, frames=6, seed=10 * fold + c, gop=2)
            rows.append([name, label, "convex", f"g{fold}{c}", fold])
    make_clip(root / "pocus" / "videos" / "viral.mp4", size=32, frames=4, seed=99, gop=2)
    rows.append(["videos/viral.mp4", "viral", "convex", "g99", ""])  # outside the eval set: empty fold
    rows.append(["videos/viral.mp4", "covid", "linear", "g98", ""])
    _write_csv(root / "pocus" / "metadata.csv", ["file_name", "label", "probe", "group", "fold"], rows)

    (root / "covid_blues" / "lus_videos").mkdir(parents=True)
    rows = []
    for fold in range(5):
        for cov in range(2):
            name = f"lus_videos/patient_{fold}{cov}_L1.mp4"
            make_clip(root / "covid_blues" / name, size=32, frames=5, seed=50 + 10 * fold + cov, gop=2)
            rows.append([name, f"{fold}{cov}", cov, (fold + cov) % 4, fold])
    _write_csv(root / "covid_blues" / "metadata.csv", ["file_name", "patient", "cov_test", "severity", "fold"], rows)

    rng = np.random.default_rng(0)
    rows = []
    for fold in range(5):
        for c, label in enumerate(BUSI_CLASSES):
            image = f"images/{label}_{fold}.png"
            mask = f"masks/{label}_{fold}.png"
            _write_png(root / "busi" / image, _speckle(rng, 32, 40, 40 * c))
            m = np.zeros((32, 40), np.uint8)
            if label != "normal":
                m[8:20, 10:24] = 255
            _write_png(root / "busi" / mask, m)
            rows.append([image, label, mask, f"dup{fold}{c}", fold])
    _write_csv(root / "busi" / "metadata.csv", ["file_name", "label", "mask_file_name", "dup_group", "fold"], rows)
    return root


@pytest.fixture
def root_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic root that a test may damage."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "root"))


def _fixture_frames(fixtures_dir: Path, size: int = 48, per_video: int = 6) -> dict[str, list[np.ndarray]]:
    """Grey frames of the fixture POCUS videos, by class (from the file name prefix), decoded at ``size`` px."""
    from timm_uscl.training.data.decode import read_frames

    prefixes = {"Cov": "covid", "Pneu": "pneumonia", "Reg": "regular"}
    out: dict[str, list[np.ndarray]] = {c: [] for c in prefixes.values()}
    for video in sorted((fixtures_dir / "pocus_videos").iterdir()):
        label = prefixes.get(video.name.split("_")[0].split("-")[0])
        if label is None:
            continue
        frames = read_frames(video, lambda n: np.linspace(0, n - 1, per_video).round().astype(int).tolist(), size)
        out[label].extend(f[0].numpy() for f in frames)
    return out


def _encode_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write grey frames as an H.264 mp4 (a clip made from fixture frames)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.repeat(f[..., None], 3, 2), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def edit_csv() -> Callable[..., None]:
    """Helpers are served as fixtures: a test folder's modules cannot be imported by name (tests/ is on the path)."""
    return _edit_csv


@pytest.fixture(scope="session")
def write_csv() -> Callable[..., Path]:
    return _write_csv


@pytest.fixture(scope="session")
def write_png() -> Callable[..., Path]:
    return _write_png


@pytest.fixture(scope="session")
def encode_clip() -> Callable[..., Path]:
    return _encode_clip


@pytest.fixture(scope="session")
def fixture_frames(fixtures_dir: Path) -> dict[str, list[np.ndarray]]:
    return _fixture_frames(fixtures_dir)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Two shared cores: one intra-op thread is faster than two fighting other processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
