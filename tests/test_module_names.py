"""Every module that a message, comment or docstring of the package, benchmarks or scripts names exists: a moved
module leaves no pointer to where it was."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import timm_uscl

REPO = Path(timm_uscl.__file__).resolve().parent.parent
TRAINER = REPO / "training"
SOURCES = sorted(
    path
    for folder in ("timm_uscl", "training", "configs", "benchmarks", "scripts")  # tests name made-up modules
    for path in (REPO / folder).rglob("*.py")
)
DOTTED = re.compile(r"\btimm_uscl(?:\.\w+)+")  # timm_uscl.training.config.TrainConfig
ROLE = re.compile(r":(?:mod|func|class|meth|data|attr):`~?(\.+[\w.]+)`")  # :mod:`.sources`, :class:`~..config.X`
PATH = re.compile(r"(?<![\w/.])((?:training|timm_uscl|tests|scripts|benchmarks)/[\w/]+\.\w+|[\w/]+/[\w]+\.py)\b")


def _package(path: Path) -> str:
    """The import name of the package holding ``path`` (``timm_uscl.training.data`` for training/data/x.py)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    installed = {"training": ("timm_uscl", "training"), "configs": ("timm_uscl", "configs")}.get(parts[0], parts[:1])
    return ".".join([*installed, *parts[1:-1]])


def _resolves(dotted: str) -> bool:
    """``a.b.c.Name``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _absolute(relative: str, package: str) -> str:
    dots = len(relative) - len(relative.lstrip("."))
    base = package.split(".")[: len(package.split(".")) - (dots - 1)]
    return ".".join([*base, relative[dots:]]).rstrip(".")


def _dangling(text: str, package: str, folder: Path) -> list[str]:
    """The names in ``text`` (of a module of ``package`` in ``folder``) that lead nowhere."""
    bases = (REPO, TRAINER, folder, folder.parent)
    names = {m for m in DOTTED.findall(text) if not _resolves(m)}
    names |= {m for m in ROLE.findall(text) if not _resolves(_absolute(m, package))}
    names |= {m for m in PATH.findall(text) if not any((base / m).exists() for base in bases)}
    return sorted(names)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_a_source_file_names_exists(source):
    assert _dangling(source.read_text(encoding="utf-8"), _package(source), source.parent) == []


def test_a_name_of_a_moved_module_is_caught_in_each_spelling():
    text = (
        "see timm_uscl.training.tangent, timm_uscl.training.meta.tangent.Tape, :mod:`.nowhere`, :class:`~.step.Gone`, "
        ":func:`.step.meta_step`, training/meta/gone.py and meta/step.py"
    )
    found = _dangling(text, "timm_uscl.training.meta", TRAINER / "meta")
    assert found == [".nowhere", ".step.Gone", "timm_uscl.training.tangent", "training/meta/gone.py"]
