"""Which timm-uscl made a file: the installed version, and the git commit when running from a checkout.

Why both: a wheel has a version but no commit (a record saying only "commit unknown" cannot be traced), and an
editable checkout can sit between releases (the version alone hides which code ran). Every record (an export's
``config.json``, a run's ``summary.json``, evaluation results) carries :func:`software`.
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["package_version", "source_commit", "software"]


def package_version() -> str:
    """The installed distribution's version; ``0+unknown`` for a source tree that was never installed."""
    try:
        return version("timm-uscl")
    except PackageNotFoundError:
        return "0+unknown"


def source_commit() -> str | None:
    """HEAD of the git checkout this code runs from (``-dirty`` with uncommitted changes), None outside one (a
    wheel in site-packages: its folder is not a work tree, and a surrounding repository is not ours)."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "pyproject.toml").is_file():  # installed from a wheel: no checkout of ours around it
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def software() -> dict[str, str | None]:
    """``{"timm_uscl": version, "commit": commit or None}``: what a record says about the code that wrote it."""
    return {"timm_uscl": package_version(), "commit": source_commit()}
