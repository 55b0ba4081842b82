"""The Hub stand-in speaks the protocol the real clients expect (huggingface_hub, datasets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hubstub import HubStub

REPO = "uscl-test/tiny"


@pytest.fixture
def pushed(hub: HubStub, tmp_path: Path) -> dict[str, bytes]:
    """A model repo with a regular config.json and an LFS model.safetensors, pushed with upload_folder."""
    files = {"config.json": b'{"architecture": "resnet18"}', "model.safetensors": os.urandom(4096)}
    src = tmp_path / "export"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    HfApi().create_repo(REPO)
    HfApi().upload_folder(repo_id=REPO, folder_path=src, commit_message="v1")
    return files


def test_upload_goes_through_preupload_lfs_batch_and_commit(hub: HubStub, pushed: dict[str, bytes]) -> None:
    paths = [p for _, p in hub.requests]
    assert f"/api/models/{REPO}/preupload/main" in paths
    assert f"/{REPO}.git/info/lfs/objects/batch" in paths
    assert ("PUT", next(p for p in paths if p.startswith("/__stub__/lfs/"))) in hub.requests
    assert paths[-1] == f"/api/models/{REPO}/commit/main"
    stored = hub.files(REPO)
    assert stored.pop(".gitattributes")  # every new repo starts with it, as on the real Hub
    assert stored == pushed
    assert hub.unknown == []


def test_second_download_is_a_single_head(hub: HubStub, pushed: dict[str, bytes]) -> None:
    hub.reset_log()
    first = hf_hub_download(REPO, "model.safetensors")
    assert Path(first).read_bytes() == pushed["model.safetensors"]
    assert [m for m, _ in hub.requests] == ["HEAD", "GET"]
    hub.reset_log()
    assert hf_hub_download(REPO, "model.safetensors") == first
    assert hub.requests == [("HEAD", f"/{REPO}/resolve/main/model.safetensors")]


def test_pinned_revision_keeps_old_bytes(hub: HubStub, pushed: dict[str, bytes]) -> None:
    v1 = HfApi().model_info(REPO).sha
    assert v1 is not None
    HfApi().upload_file(path_or_fileobj=b'{"v": 2}', path_in_repo="config.json", repo_id=REPO)
    assert HfApi().model_info(REPO).sha != v1
    assert Path(hf_hub_download(REPO, "config.json", revision=v1)).read_bytes() == pushed["config.json"]
    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == b'{"v": 2}'
    assert hub.files(REPO, revision=v1)["config.json"] == pushed["config.json"]


def test_snapshot_download(hub: HubStub, pushed: dict[str, bytes]) -> None:
    local = Path(snapshot_download(REPO))
    assert {n: (local / n).read_bytes() for n in pushed} == pushed
    assert local.name == HfApi().model_info(REPO).sha


def test_errors_map_to_client_exceptions(hub: HubStub, pushed: dict[str, bytes]) -> None:
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "pytorch_model.bin")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("uscl-test/missing", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        list(HfApi().list_repo_tree(REPO, path_in_repo="no/such/dir"))


def test_ranged_get_returns_206(hub: HubStub, pushed: dict[str, bytes]) -> None:
    from huggingface_hub import get_session

    url = f"{hub.endpoint}/{REPO}/resolve/main/model.safetensors"
    resp = get_session().get(url, headers={"Range": "bytes=10-19"})
    assert resp.status_code == 206
    assert resp.headers["Content-Range"] == "bytes 10-19/4096"
    assert resp.content == pushed["model.safetensors"][10:20]


def test_offline_blocks_requests(hub: HubStub, pushed: dict[str, bytes], offline: None) -> None:
    hub.reset_log()
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "config.json")
    assert hub.requests == []


def test_offline_serves_cached_files(hub: HubStub, pushed: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    cached = hf_hub_download(REPO, "config.json")
    hub.reset_log()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    assert hf_hub_download(REPO, "config.json") == cached
    assert hub.requests == []


def test_subprocess_inherits_the_stub(hub: HubStub, pushed: dict[str, bytes]) -> None:
    code = f"from huggingface_hub import hf_hub_download; print(open(hf_hub_download({REPO!r}, 'config.json')).read())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == json.loads(pushed["config.json"])
    assert Path(os.environ["HF_HUB_CACHE"], "models--uscl-test--tiny").is_dir()  # the per-test cache


def test_dataset_push_and_stream_back(hub: HubStub) -> None:
    from datasets import Dataset, load_dataset

    rows = {"patient_id": ["p0", "p1", "p2"], "frames": [3, 5, 8]}
    Dataset.from_dict(rows).push_to_hub("uscl-test/tiny-ds")
    stored = hub.files("uscl-test/tiny-ds", repo_type="dataset")
    assert any(p.startswith("data/") and p.endswith(".parquet") for p in stored)
    streamed = load_dataset("uscl-test/tiny-ds", split="train", streaming=True)
    assert {k: [r[k] for r in streamed] for k in rows} == rows
    assert hub.unknown == []


def test_preupload_modes(hub: HubStub, pushed: dict[str, bytes]) -> None:
    from huggingface_hub import get_session

    files = [
        {"path": p, "size": n, "sample": ""}
        for p, n in [
            ("a.parquet", 10),
            ("b.safetensors", 10),
            ("c.bin", 10),
            ("big.txt", 11 * 1024 * 1024),
            ("notes.txt", 10),
        ]
    ]
    resp = get_session().post(f"{hub.endpoint}/api/models/{REPO}/preupload/main", json={"files": files})
    assert [f["uploadMode"] for f in resp.json()["files"]] == ["lfs", "lfs", "lfs", "lfs", "regular"]


def test_corrupt_changes_bytes_but_not_the_commit(hub: HubStub, pushed: dict[str, bytes], tmp_path: Path) -> None:
    sha = HfApi().model_info(REPO).sha
    warm = hf_hub_download(REPO, "model.safetensors")
    assert hub.corrupt(REPO, "model.safetensors", b"garbage") == sha
    # The client trusts snapshots/<sha>/ once written: only a cold cache sees the swapped bytes.
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == Path(warm).read_bytes()
    cold = hf_hub_download(REPO, "model.safetensors", cache_dir=tmp_path / "cold")
    assert Path(cold).read_bytes() == b"garbage"
    assert HfApi().model_info(REPO).sha == sha


def test_offline_blocks_datasets(hub: HubStub, offline: None) -> None:
    from datasets import load_dataset

    with pytest.raises(ConnectionError, match="OfflineModeIsEnabled"):
        load_dataset("uscl-test/tiny-ds", split="train", streaming=True)
    assert hub.requests == []
