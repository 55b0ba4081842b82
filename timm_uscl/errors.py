"""Exception types. Every message names the file or tag at fault and says how to fix it."""

from __future__ import annotations

__all__ = [
    "USCLError",
    "UnknownWeightsError",
    "WeightsNotPublishedError",
    "WeightsUnavailableError",
    "ChecksumMismatchError",
    "CheckpointFormatError",
    "HubError",
    "OutputFolderError",
]


class USCLError(Exception):
    """Base class of every error raised on purpose by timm-uscl."""


class UnknownWeightsError(USCLError, KeyError):
    """A model name or pretrained tag that is not in the weights table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsNotPublishedError(USCLError):
    """The tag exists in the weights table but its weights are not on the Hub yet."""


class WeightsUnavailableError(USCLError):
    """The weights could not be fetched (offline with a cold cache, missing repo or file)."""


class ChecksumMismatchError(USCLError):
    """A downloaded or local weights file does not have the sha256 the weights table records."""


class CheckpointFormatError(USCLError, ValueError):
    """A checkpoint that cannot be read or converted (bad pickle, truncated file, wrong keys or arch)."""


class HubError(USCLError):
    """The Hub refused a request (authentication, permissions, a missing repo) while pushing."""


class OutputFolderError(USCLError):
    """An output folder that would lose files: empty path, non-empty without overwrite, symlinks, subfolders."""
