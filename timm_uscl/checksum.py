"""sha256 of weights files: what the weights table pins and what every load checks."""

from __future__ import annotations

import hashlib
import os

from .errors import ChecksumMismatchError

__all__ = ["sha256_file", "verify_sha256"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, label: str) -> None:
    """Refuse a file whose content is not the one the weights table records."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatchError(
            f"{label}: checksum mismatch for {path}: sha256 is {actual}, the weights table expects {expected}. "
            f"The file is corrupt or was replaced; delete it and fetch it again with "
            f"`timm-uscl pull --force {label}`."
        )
