"""The trainer's error types, in one place. Each subclasses :class:`timm_uscl.USCLError`, so the CLI prints it as
one line naming the file or setting at fault and the fix, and exits non-zero."""

from __future__ import annotations

from timm_uscl.errors import USCLError

__all__ = [
    "ConfigError",
    "DataError",
    "DecodeError",
    "EvaluationError",
    "MetaConfigError",
    "MetaOptimizerError",
    "PublishError",
    "RunFolderError",
    "StoreBudgetError",
    "TrainingDivergedError",
]


class ConfigError(USCLError, ValueError):
    """An unknown preset or key, or a value of the wrong type."""


class DataError(USCLError):
    """The training data cannot be used: nothing decodes, a source or filter matches nothing, bad config."""


class StoreBudgetError(DataError):
    """The decoded frames would pass the frame store's memory budget (``store: auto`` then streams instead)."""


class DecodeError(DataError):
    """One video could not be opened or decoded (corrupt, truncated, zero frames, not a video)."""


class EvaluationError(USCLError, ValueError):
    """A bad evaluation request or input: unknown task or protocol, missing or bad data (metadata, files outside
    the task folder, undecodable videos), leaking folds, a malformed export, non-finite weights or outputs, a
    --card export that is not the evaluated weights."""


class MetaOptimizerError(USCLError, TypeError):
    """The meta step got an optimizer its lookahead cannot mirror."""


class MetaConfigError(USCLError, ValueError):
    """The meta step's configuration cannot work with this model."""


class PublishError(USCLError):
    """``publish-dataset`` could not push: a bad repo id, an unreachable Hub, or a repo more public than asked."""


class RunFolderError(USCLError):
    """A run folder that this run may not write: another run's, or one in use by a live process."""


class TrainingDivergedError(USCLError):
    """The loss became NaN or infinite; the last good checkpoint is kept untouched."""
