"""Where a number came from: code commit, library versions and hardware, stored beside every result."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from .runtime import CPU_BF16_FLAGS, cpu_flags, cpu_model

__all__ = ["environment", "git_commit"]


def git_commit() -> str | None:
    """The checkout's HEAD commit, ``-dirty`` when tracked files differ from it; None outside git."""
    repo = Path(__file__).resolve().parents[1]
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


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    import timm

    device = torch.device(device)
    return {
        "commit": git_commit(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cpu_bf16": sorted(set(CPU_BF16_FLAGS) & cpu_flags()),
        "threads": torch.get_num_threads(),
    }
