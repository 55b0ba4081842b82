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
    "RunFolderError",
    "TrainingDivergedError",
]


class ConfigError(USCLError, ValueError):
    """An unknown preset or key, or a value of the wrong type."""


class DataError(USCLError):
    """The training data cannot be used: nothing decodes, a source or filter matches nothing, bad config."""


class DecodeError(DataError):
    """One video could not be opened or decoded (corrupt, truncated, zero frames, not a video)."""


class EvaluationError(USCLError, ValueError):
    """A bad evaluation request: unknown task or protocol, missing data, leaking folds, missing --arch."""


class MetaOptimizerError(USCLError, TypeError):
    """The meta step got an optimizer its lookahead cannot mirror."""


class MetaConfigError(USCLError, ValueError):
    """The meta step's configuration cannot work with this model."""


class RunFolderError(USCLError):
    """A run folder that this run may not write: another run's, or one in use by a live process."""


class TrainingDivergedError(USCLError):
    """The loss became NaN or infinite; the last good checkpoint is kept untouched."""
