"""What a weights file may hold before it is exported: finite numbers, in the dtype kind timm's model has.

Why here and not at load time: an export with NaN weights loads fine, hashes fine and pushes fine; only its
outputs are garbage. And ``load_state_dict`` copies an int8 tensor into a float parameter without a word, so a
quantized or unrelated file would pass as weights. Both are refused before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from .errors import CheckpointFormatError

__all__ = ["check_finite", "check_dtype_kinds", "WeightsBudget", "safetensors_header", "check_file_size"]

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8, "BOOL": 1}
_ITEMSIZE |= {f"{s}{b}": b // 8 for s in "IU" for b in (8, 16, 32, 64)}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class WeightsBudget:
    """The most bytes a weights file for ``arch`` may hold: every value of timm's model (classifier included) in
    the widest dtype (8 bytes), twice over (room for a projection head, a CMW-Net or a foreign classifier), plus
    64 MiB. Why: a header may declare 4 TiB of tensors in a sparse file; a reader that maps or loads it first
    grew to 12 GiB before "do not fit" (N2). Files are checked against this before anything is allocated."""

    arch: str
    max_bytes: int

    @classmethod
    def of(cls, model: torch.nn.Module | str) -> WeightsBudget:
        """The budget of a timm model, or of an architecture name (built on the meta device: no memory)."""
        if isinstance(model, str):
            with torch.device("meta"):
                model = timm.create_model(model)
        arch = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
        numel = sum(t.numel() for t in model.state_dict().values())
        return cls(str(arch), 16 * numel + 64 * 2**20)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def check_file_size(path: Path, budget: WeightsBudget, fix: str) -> int:
    """The file's size, refused (one line) when it exceeds what ``budget.arch`` can need."""
    size = path.stat().st_size
    if size > budget.max_bytes:
        raise CheckpointFormatError(
            f"{path}: {_mib(size)}, more than {budget.arch} weights can hold (at most {_mib(budget.max_bytes)}), "
            f"so it is not weights of that architecture (or is damaged); nothing was loaded: {fix}."
        )
    return size


def _entry(path: Path, name: str, value: object, data_bytes: int, fix: str) -> tuple[str, tuple[int, ...]]:
    """One header entry's (dtype, shape), checked against the format: known dtype, offsets inside the data and
    exactly the bytes the shape needs."""
    bad = CheckpointFormatError(
        f"{path}: not a readable safetensors file (the header entry {name!r} is malformed or lies past the end of "
        f"the file: truncated?); {fix}."
    )
    if not isinstance(value, dict):
        raise bad
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise bad
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        raise bad
    if dtype not in _ITEMSIZE:
        raise CheckpointFormatError(f"{path}: tensor {name!r} has the unknown dtype {dtype!r}; {fix}.")
    start, end = offsets
    if not 0 <= start <= end <= data_bytes or end - start != math.prod(shape) * _ITEMSIZE[dtype]:
        raise bad
    return dtype, tuple(shape)


def safetensors_header(path: Path, budget: WeightsBudget, fix: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, read from its header alone (8 bytes and the JSON).

    The file size is checked against ``budget`` first and every entry against the format (dtype, offsets inside
    the file, bytes = shape x dtype), so nothing the header declares is ever mapped or allocated before it is
    known to fit; each refusal is one line naming the file and ``fix``."""
    size = check_file_size(path, budget, fix)
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= length <= min(size - 8, _MAX_HEADER):
            raise CheckpointFormatError(
                f"{path}: not a safetensors file (its header length {length} does not fit the file of {size} "
                f"bytes); {fix}."
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        header = None
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{path}: not a safetensors file (its header is not a JSON object); {fix}.")
    data = size - 8 - length
    return {k: _entry(path, k, v, data, fix) for k, v in header.items() if k != "__metadata__"}


def _kind(tensor: torch.Tensor) -> str:
    if tensor.is_floating_point():
        return "floating-point"
    if tensor.is_complex():
        return "complex"
    return "boolean" if tensor.dtype == torch.bool else "integer"


def check_finite(tensors: Mapping[str, torch.Tensor], label: str) -> None:
    """Refuse the first floating-point tensor (parameter or buffer) holding NaN or infinity."""
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        finite = torch.isfinite(tensor)
        if bool(finite.all()):
            continue
        bad = tensor[~finite]
        what = " and ".join(
            name for name, count in (("NaN", int(bad.isnan().sum())), ("inf", int(bad.isinf().sum()))) if count
        )
        raise CheckpointFormatError(
            f"{label}: tensor {key} holds {what} ({int((~finite).sum())} of {tensor.numel()} values): these weights "
            f"are broken (a diverged run?); export the weights of the last good checkpoint instead."
        )


def check_dtype_kinds(
    tensors: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], arch: str, label: str
) -> None:
    """Refuse a tensor whose dtype kind differs from the model's (int8 weights, a float step counter).

    A float of another precision (fp16, bf16) is fine: it is widened to float32 exactly, and the converters report
    it. Integer buffers such as BatchNorm's ``num_batches_tracked`` stay integer.
    """
    for key, tensor in tensors.items():
        expected = reference.get(key)
        if expected is None or _kind(tensor) == _kind(expected):
            continue
        raise CheckpointFormatError(
            f"{label}: tensor {key} is {str(tensor.dtype).removeprefix('torch.')} ({_kind(tensor)}) where timm's "
            f"{arch} has {str(expected.dtype).removeprefix('torch.')}; timm-uscl never casts weights silently: "
            f"export the original floating-point weights (not a quantized or unrelated file)."
        )
