"""Where a number came from: timm-uscl's version and commit, library versions and hardware, beside every result."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from timm_uscl.version import package_version, source_commit

from .runtime import CPU_BF16_FLAGS, cpu_flags, cpu_model

__all__ = ["environment", "git_commit"]

git_commit = source_commit  # the checkout's HEAD (``-dirty``), None outside one: timm_uscl.version owns it


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    import timm

    device = torch.device(device)
    return {
        "timm_uscl": package_version(),
        "commit": source_commit(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cpu_bf16": sorted(set(CPU_BF16_FLAGS) & cpu_flags()),
        "threads": torch.get_num_threads(),
    }
