"""A guard that fails on every operator that would make the host wait for a GPU, checked on the CPU.

On CUDA, ``nonzero``, boolean-mask indexing, ``item()``/``bool()`` of a tensor and friends block the host until
the device catches up; a data path that is meant to be a pure queue of kernel launches must contain none of
them. They are the same operators on the CPU, so a dispatch mode can find them without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncError", "no_host_sync"]

_SYNCING = {
    "aten._local_scalar_dense.default",  # item(), bool(), int(), float(), if tensor:
    "aten.nonzero.default",
    "aten.nonzero_static.default",
    "aten.masked_select.default",
    "aten.is_nonzero.default",
    "aten.equal.default",
    "aten._unique2.default",
    "aten.unique_consecutive.default",
    "aten.unique_dim.default",
    "aten.repeat_interleave.Tensor",
}


class HostSyncError(AssertionError):
    """An operator that synchronises the host with the device was called inside :func:`no_host_sync`."""


class no_host_sync(TorchDispatchMode):  # lower case: a context manager, like torch.no_grad
    """``with no_host_sync(): ...`` raises :class:`HostSyncError` at the first host-synchronising operator."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = str(func)
        bool_index = name == "aten.index.Tensor" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
        )
        if name in _SYNCING or bool_index:
            raise HostSyncError(f"{name} synchronises the host with the device")
        return func(*args, **(kwargs or {}))
