"""Lazily imported package APIs (PEP 562): ``from timm_uscl.training import pretrain`` loads the trainer's modules
only when a name is first used, so the command line can register the trainer's subcommands (and read their
defaults from light config modules) without importing torch-heavy code or the ``train`` extra."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public ``name`` lives in the submodule ``exports[name]``
    (relative, e.g. ``".engine"``)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
