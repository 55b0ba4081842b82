"""How a run executes on the machine it lands on: numeric precision and CPU threads, chosen once, named in the log.

Why a module of its own: ``precision: auto`` must give the same answer to the trainer, the benchmarks and the
reproduction, and the answer depends on the hardware. bf16 autocast only pays where the hardware multiplies bf16
natively: GPUs that report bf16 support, and CPUs with AVX512-BF16 or AMX-BF16 (oneDNN's bf16 convolutions). On
other CPUs it is emulated and slower than fp32, so ``auto`` keeps fp32 there. ``auto`` is resolved before the run
folder is written, so ``config.yaml``, checkpoints and exports record the precision that actually ran, and a run
resumed on a machine that would choose differently is refused instead of silently changing recipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import PRECISIONS

__all__ = ["CPU_BF16_FLAGS", "Precision", "cpu_flags", "cpu_model", "resolve_precision", "resolve_threads"]

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of native bf16 arithmetic (either one makes ``auto`` choose bf16 on a CPU)."""


@dataclass(frozen=True)
class Precision:
    """The resolved precision (``fp32`` or ``bf16``) and why it was chosen (for the log and the banner)."""

    name: str
    reason: str

    @property
    def autocast(self) -> bool:
        return self.name == "bf16"


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (None where /proc/cpuinfo cannot be read)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def resolve_precision(precision: str, device: torch.device, flags: frozenset[str] | None = None) -> Precision:
    """``fp32`` / ``bf16`` as asked, or the machine's choice for ``auto`` (module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return Precision(precision, "set in the config")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16")
        return Precision("fp32", "auto: this GPU has no native bf16")
    if device.type == "cpu":
        found = sorted(set(CPU_BF16_FLAGS) & (cpu_flags() if flags is None else flags))
        if found:
            return Precision("bf16", f"auto: the CPU has {', '.join(found)}")
        return Precision("fp32", f"auto: the CPU has none of {', '.join(CPU_BF16_FLAGS)} (bf16 would be emulated)")
    return Precision("fp32", f"auto: fp32 on {device.type}")


def resolve_threads(threads: int) -> int:
    """Intra-op threads for the run: ``threads``; for 0, ``OMP_NUM_THREADS`` when the user or torchrun set it, else
    the cores this process may use shared among the processes of this machine (``LOCAL_WORLD_SIZE``)."""
    if threads > 0:
        return threads
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
