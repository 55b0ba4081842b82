"""Weights files a hostile or careless user may hand over, built by the tests (nothing is committed)."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path

import torch


def sparse_bomb(path: Path, declared: list[int], sd: Mapping[str, torch.Tensor]) -> None:
    """A valid safetensors file of ``sd`` whose conv1.weight is declared F32 ``declared`` and stored as a sparse
    hole (the file is complete; no disk blocks): a loader that maps or reads before checking sizes blows up."""
    header, blobs, off = {}, [], 0
    for key, tensor in sd.items():
        if key == "conv1.weight":
            continue
        data = tensor.contiguous().numpy().tobytes()
        dtype = "F32" if tensor.is_floating_point() else "I64"
        header[key] = {"dtype": dtype, "shape": list(tensor.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    size = 4 * math.prod(declared)
    header["conv1.weight"] = {"dtype": "F32", "shape": declared, "data_offsets": [off, off + size]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))
        handle.truncate(8 + len(raw) + off + size)
