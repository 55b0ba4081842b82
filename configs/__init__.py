"""Preset training configurations (YAML), resolved by :mod:`timm_uscl.training.config`.

The files are the table of presets: :data:`PRESETS` is derived from them, so a new recipe is one new file (and
the CLI's ``--preset`` choices, read from here without importing the trainer, follow it).
"""

from importlib import resources

__all__ = ["PRESETS"]

_FILES = [entry.name for entry in resources.files(__name__).iterdir()]
PRESETS: tuple[str, ...] = tuple(
    sorted(
        (name.removesuffix(".yaml") for name in _FILES if name.endswith(".yaml")),
        key=lambda name: (name != "meta_uscl", name),
    )
)  # the default recipe first
