"""What a device run hands back must fit its return limits: at most 8 files of at most 16 MiB, 64 MiB in all.

Two things are larger than one file, so they travel in parts:

* **The resume state** of a run cut short (or pretrained but not yet evaluated): its ``last.pt`` with the model's
  floating-point tensors in fp16 (fp32 where a value passes fp16's range, e.g. an early BatchNorm variance)
  and the optimizer's per-parameter state (momentum, Adam moments) left out,
  about 23 MB for a ResNet-18 instead of 90-140 MB, split into parts of at most 15 MiB. Resuming from it
  continues at the same epoch, step, data position (exactly the batches the uninterrupted run would have drawn),
  scheduler, RNG states and CMW-Net; the weights carry fp16 rounding (relative 5e-4) and the momentum restarts
  from zero. That is the price of fitting the return limits, stated wherever a resumed run is reported.
* **The Meta-USCL backbone**, fp16 safetensors sharded by tensor into files of at most 15 MiB; each part is a
  valid safetensors file, and :func:`load_shards` merges them back into one state dict.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["PART_BYTES", "pack_resume", "unpack_resume", "save_shards", "load_shards", "parts_of"]

PART_BYTES = 15 << 20  # under the 16 MiB a returned file may have
_FP16_MAX = 65504.0


def _half(t: torch.Tensor) -> torch.Tensor:
    """fp16 when the tensor fits its range; else as it is (early BatchNorm running variances can pass 65504)."""
    if t.is_floating_point() and t.numel() and bool(t.abs().max() <= _FP16_MAX):
        return t.half()
    return t


def parts_of(folder: str | os.PathLike, stem: str) -> list[Path]:
    """``stem.partKofN.*`` files of ``folder`` in order (all N of them, or none)."""
    found = sorted(Path(folder).glob(f"{stem}.part*of*.*"))
    if not found:
        return []
    total = int(found[0].name.split("of")[1].split(".")[0])
    if len(found) != total:
        raise FileNotFoundError(f"{folder}: {len(found)} of the {total} parts of {stem}; copy all of them")
    return found


def _split(data: bytes, folder: Path, stem: str, suffix: str) -> list[Path]:
    n = max(1, -(-len(data) // PART_BYTES))
    paths = []
    for k in range(n):
        path = folder / f"{stem}.part{k + 1}of{n}{suffix}"
        path.write_bytes(data[k * PART_BYTES : (k + 1) * PART_BYTES])
        paths.append(path)
    return paths


def pack_resume(last_pt: str | os.PathLike, folder: str | os.PathLike, stem: str) -> list[Path]:
    """``last.pt`` -> ``folder/stem.partKofN.pt`` (fp16 model, no optimizer moments; see the module doc)."""
    state = torch.load(last_pt, map_location="cpu", weights_only=True)
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in state["model"].items()}
    state["model"] = {k: _half(v) for k, v in state["model"].items()}
    if isinstance(state.get("optimizer"), dict):  # the backbone's moments go; CMW-Net's Adam is tiny: kept
        state["optimizer"] = {**state["optimizer"], "state": {}}
    state["packed"] = {"model_dtype": "float16", "optimizer_state": "dropped", "dtypes": dtypes}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return _split(buffer.getvalue(), Path(folder), stem, ".pt")


def unpack_resume(parts: Sequence[Path], last_pt: str | os.PathLike) -> dict[str, Any]:
    """Parts from :func:`pack_resume` -> a ``last.pt`` the trainer resumes from (model back in fp32)."""
    state = torch.load(io.BytesIO(b"".join(p.read_bytes() for p in parts)), map_location="cpu", weights_only=True)
    packed = state.pop("packed", {})
    dtypes = packed.pop("dtypes", {})
    state["model"] = {
        k: v.to(getattr(torch, dtypes.get(k, str(v.dtype).removeprefix("torch.")))) for k, v in state["model"].items()
    }
    Path(last_pt).parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, last_pt)
    return packed


def save_shards(tensors: Mapping[str, torch.Tensor], folder: str | os.PathLike, stem: str) -> list[Path]:
    """fp16 copies of ``tensors`` (fp32 kept where fp16 would overflow) as safetensors files of at most
    :data:`PART_BYTES` each (whole tensors)."""
    groups: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        t = _half(t).contiguous()
        nbytes = t.numel() * t.element_size()
        if groups[-1] and size + nbytes > PART_BYTES - (1 << 20):  # leave room for the header
            groups.append({})
            size = 0
        groups[-1][name] = t
        size += nbytes
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for k, group in enumerate(groups):
        path = Path(folder) / f"{stem}.part{k + 1}of{len(groups)}.safetensors"
        save_file(group, str(path), metadata={"format": "pt", "dtype": "float16", "part": f"{k + 1}/{len(groups)}"})
        paths.append(path)
    return paths


def load_shards(parts: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The state dict of :func:`save_shards`' parts, merged (fp16, and fp32 where it was kept)."""
    merged: dict[str, torch.Tensor] = {}
    for path in parts:
        merged.update(load_file(str(path)))
    return merged
