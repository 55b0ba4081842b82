"""The distribution: an MIT licence declared the PEP 639 way, and an sdist whose tests can run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_NOT_SOURCES = (".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".device*")


def _build(kind: str, tmp_path: Path) -> Path:
    """An sdist or wheel built with the installed setuptools, no isolation (no network), from a copy of the sources."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    code = f"import sys; from setuptools import build_meta; print(build_meta.build_{kind}(sys.argv[1]))"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp_path / "dist" / proc.stdout.strip().splitlines()[-1]


def test_the_licence_file_is_mit_for_the_timm_uscl_developers():
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "timm-uscl developers" in text


def test_the_sdist_declares_mit_by_spdx_and_carries_everything_its_tests_import(tmp_path):
    with tarfile.open(_build("sdist", tmp_path)) as sdist:
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
    readme_links = set(re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text()))
    assert readme_links and readme_links <= names, f"README links files the sdist lacks: {readme_links - names}"
    assert "timm_uscl/py.typed" in names
    for url in ("https://arxiv.org/abs/2212.04097", "https://arxiv.org/abs/2011.13066"):
        assert "Project-URL: Paper (" in pkg_info and url in pkg_info


def test_the_wheel_ships_py_typed(tmp_path):
    """PEP 561: type checkers read the plugin's annotations only when py.typed is inside the installed package."""
    with zipfile.ZipFile(_build("wheel", tmp_path)) as wheel:
        assert "timm_uscl/py.typed" in wheel.namelist()
