"""The distribution: an MIT licence declared the PEP 639 way, and an sdist whose tests can run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_NOT_SOURCES = (".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".device*")


def test_the_licence_file_is_mit_for_the_timm_uscl_developers():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "timm-uscl developers" in text


def test_the_sdist_declares_mit_by_spdx_and_carries_everything_its_tests_import(tmp_path):
    """Built with the installed setuptools, no isolation (no network), from a copy of the sources."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with tarfile.open(tmp_path / "dist" / proc.stdout.strip().splitlines()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
        pkg_file = sdist.extractfile(next(n for n in sdist.getnames() if n.endswith("/PKG-INFO")))
        assert pkg_file is not None
        pkg_info = pkg_file.read().decode()
    assert {
        "LICENSE",
        "tests/conftest.py",
        "tests/hubstub.py",
        "tests/clips.py",
        "tests/test_weights_store.py",
    } <= names
    assert {"hub_cards/model_card.md.j2", "configs/meta_uscl.yaml", "timm_uscl/cli.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".safetensors", ".pt"))]
    assert "License-Expression: MIT" in pkg_info and "License-File: LICENSE" in pkg_info
    assert "Classifier: License ::" not in pkg_info, "PEP 639: the SPDX expression replaces the licence classifier"
