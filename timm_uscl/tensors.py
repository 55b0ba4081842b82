"""What a weights file may hold before it is exported: finite numbers, in the dtype kind timm's model has.

Why here and not at load time: an export with NaN weights loads fine, hashes fine and pushes fine; only its
outputs are garbage. And ``load_state_dict`` copies an int8 tensor into a float parameter without a word, so a
quantized or unrelated file would pass as weights. Both are refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .errors import CheckpointFormatError

__all__ = ["check_finite", "check_dtype_kinds"]


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
