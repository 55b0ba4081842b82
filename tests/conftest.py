"""Shared fixtures: one loopback Hub stand-in per session, isolated HF caches, data location, synthetic clips.

The environment is set at import time because huggingface_hub, datasets and timm read ``HF_ENDPOINT``,
``HF_HOME`` and the offline flags once, when they are first imported. Subprocesses started by tests inherit
``os.environ`` and therefore talk to the same stub.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

from clips import make_clip
from hubstub import HubStub

if "huggingface_hub" in sys.modules:  # its constants would already point at the real Hub
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could set HF_ENDPOINT")
_HUB = HubStub().start()
_SESSION_HOME = tempfile.TemporaryDirectory(prefix="timm_uscl_hf_home_")
os.environ.update(
    HF_ENDPOINT=_HUB.endpoint,
    HF_HUB_DISABLE_XET="1",  # the stub speaks legacy LFS, not Xet
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_TOKEN="hf_test_token_not_secret",
    HF_HOME=_SESSION_HOME.name,
    HF_HUB_CACHE=os.path.join(_SESSION_HOME.name, "hub"),
    HF_HUB_OFFLINE="0",
    HF_DATASETS_OFFLINE="0",
)
for _var in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_CACHE", "HF_XET_CACHE", "HF_ASSETS_CACHE", "HF_TOKEN_PATH"):
    os.environ.pop(_var, None)

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _HUB.stop()
    _SESSION_HOME.cleanup()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HubStub:
    """The session's Hub stub, emptied, with a fresh HF cache (in-process and for subprocesses) for this test."""
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import HfFileSystem

    _HUB.reset()
    home = tmp_path / "hf_home"
    for name, value in (("HF_HOME", home), ("HF_HUB_CACHE", home / "hub"), ("HF_DATASETS_CACHE", home / "datasets")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    if (ds_config := sys.modules.get("datasets.config")) is not None:
        monkeypatch.setattr(ds_config, "HF_DATASETS_CACHE", home / "datasets")
    # fsspec keeps HfFileSystem instances (and their directory listings) alive across tests: drop them.
    HfFileSystem.clear_instance_cache()
    return _HUB


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Turn huggingface_hub (and datasets) offline in-process and for subprocesses.

    huggingface_hub 2.x checks ``constants.HF_HUB_OFFLINE`` at call time (its request hook raises
    ``OfflineModeIsEnabled``, and downloads fall back to the cache); datasets copies the flag into
    ``datasets.config`` at import, so a datasets imported during the test is reset afterwards.
    """
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    if (ds_config := sys.modules.get("datasets.config")) is not None:
        monkeypatch.setattr(ds_config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(ds_config, "HF_DATASETS_OFFLINE", True)
    yield
    if (ds_config := sys.modules.get("datasets.config")) is not None:
        monkeypatch.setattr(ds_config, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(ds_config, "HF_DATASETS_OFFLINE", False)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder (never in git): ``$TIMM_USCL_DATA`` or ``<repo>/../shared/data``."""
    root = Path(os.environ.get("TIMM_USCL_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not root.is_dir():
        msg = f"data folder {root} not found (set TIMM_USCL_DATA or provide <repo>/../shared/data)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def fixtures_dir(data_root: Path) -> Path:
    """Small, licence-cleared samples of each dataset (see its README.md and manifest.csv)."""
    return data_root / "fixtures"


@pytest.fixture(scope="session")
def synthetic_clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 64x64, 24-frame H.264 clips of moving speckle with an 8-frame GOP (tests that need no real data)."""
    out = tmp_path_factory.mktemp("synthetic_clips")
    return [make_clip(out / f"clip{k}.mp4", seed=k) for k in range(3)]


@pytest.fixture(scope="session")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of ten small clips (32x32, 12-16 frames): enough videos for batches and a meta split."""
    out = tmp_path_factory.mktemp("clip_folder")
    for k in range(10):
        make_clip(out / f"video{k:02d}.mp4", size=32, frames=12 + k % 5, seed=100 + k, gop=4)
    return out


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A factory of size-limited folders (``small_disk("3m")``), for disk-full tests: a tmpfs mount where this process
    may mount one (root in a container, as CI runs), else the test is skipped with the reason."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounts)}_{size}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a size-limited tmpfs here: {done.stderr.decode().strip()[:120]}")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def hub_video_repo(hub: HubStub, clip_folder: Path, tmp_path: Path) -> str:
    """``org/lus-videos`` on the Hub stub: the ten clips of ``clip_folder`` with a metadata.csv assigning 3 patients."""
    from huggingface_hub import HfApi

    folder = tmp_path / "repo"
    shutil.copytree(clip_folder, folder)
    rows = ["file_name,patient"] + [f"{p.name},p{i % 3}" for i, p in enumerate(sorted(folder.glob("*.mp4")))]
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    api = HfApi()
    api.create_repo("org/lus-videos", repo_type="dataset")
    api.upload_folder(repo_id="org/lus-videos", repo_type="dataset", folder_path=str(folder))
    return "org/lus-videos"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty local weights store for this test; the registry is rebuilt from it, and again afterwards."""
    from timm_uscl.uscl import refresh_registry

    root = tmp_path / "store"
    monkeypatch.setenv("TIMM_USCL_WEIGHTS", str(root))
    refresh_registry()
    yield root
    monkeypatch.undo()  # every patch of this test (the store and any WEIGHTS row), so the rebuild sees the real table
    refresh_registry()


@pytest.fixture
def source() -> torch.nn.Module:
    """A seeded random ``resnet18_uscl`` (eval mode): the weights the plugin tests export, install and load.
    timm and torch are imported here, not at the top: huggingface_hub must not load before HF_ENDPOINT is set."""
    import timm
    import torch

    torch.manual_seed(0)
    return timm.create_model("resnet18_uscl").eval()
