"""Training configuration: presets (``configs/<name>.yaml``), a config file, then ``key=value`` overrides.

A :class:`TrainConfig` holds the run's knobs and a :class:`~.data.DataConfig` (``config.data``) with the data
pipeline's. Presets, config files and ``--set`` use flat keys (``image_size: 64``) or a nested ``data:`` mapping;
flat data keys are routed to ``config.data``, the one place they are read (``config.data.image_size``): a setting
read under two names could be set under one and read under the other. ``seed`` is the data's too (it seeds the
pairs, the meta split and, in the engine, the initial weights). Every default is stated once, in these two
dataclasses; a preset lists only what its recipe changes. The resolved config is saved as ``config.yaml`` in every
run folder, so a run can be repeated exactly.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from timm_uscl.archs import ARCHITECTURES
from timm_uscl.configs import PRESETS  # the preset files are the table of presets
from timm_uscl.errors import UnknownWeightsError
from timm_uscl.names import check_user_tag

from .data.config import DataConfig
from .errors import ConfigError
from .meta.config import BN_VIEWS, GRAPH_MODES, HYPERGRADS
from .model import INITS
from .optim import OPTIMIZERS, SCHEDULES

__all__ = [
    "TrainConfig",
    "ConfigError",
    "PRESETS",
    "PRECISIONS",
    "DATA_KEYS",
    "load_config",
    "save_config",
    "parse_overrides",
    "data_config",
    "flat_config",
]

PRECISIONS = ("auto", "fp32", "bf16")  # auto resolves per machine (training/runtime.py)
DATA_KEYS = frozenset(f.name for f in fields(DataConfig))
# decoded, resized frames per clip on local disk (outside the repo; fine even for no-derivatives data, which is
# never shared): without it every pair decodes most of a single-GOP clip (benchmarks/RESULTS.md)
FRAME_CACHE = "~/.cache/timm-uscl/frames"


def _trainer_data() -> DataConfig:
    """The trainer's data defaults: DataConfig's, with the frame cache on."""
    return DataConfig(cache_dir=FRAME_CACHE)


@dataclass
class TrainConfig:
    """Every knob of a pretraining run; the defaults are the Meta-USCL paper recipe (``preset: meta_uscl``)."""

    preset: str = "meta_uscl"
    # model
    arch: str = "resnet18_uscl"
    proj_dim: int = 128
    temperature: float = 0.5
    init: str = "torchvision"  # model.INITS: the reference's ResNet init, or timm's (last BN of each block zeroed)
    bn_views: str = "per_view"  # meta.config.BN_VIEWS: each view its own BatchNorm batch (the reference) or one
    # optimisation
    optimizer: str = "sgd"  # optim.OPTIMIZERS
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 300
    warmup_epochs: int = 10
    schedule: str = "metauscl"  # optim.SCHEDULES: exp warm-up then cosine (metauscl), constant then cosine (uscl), ...
    # CMW-Net meta-weighting
    meta: bool = True
    meta_interval: int = 1  # meta step every k iterations (k = 1 is the paper)
    cmw_lr: float = 6e-5
    hypergrad: str = "auto"  # meta.config.HYPERGRADS: the exact routes of the hypergradient
    # runtime
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # PRECISIONS; fp32, bf16 autocast, or auto: bf16 where the hardware has it (runtime.py)
    threads: int = 0  # CPU intra-op threads (0: every core this process may use)
    channels_last: bool = True  # NHWC activations: faster convolutions on CPUs (oneDNN) and GPUs under autocast
    compile: bool = False
    graphs: str = "off"  # meta.config.GRAPH_MODES: plain and meta steps as CUDA graphs (meta/graphs.py); not yet
    # run on a GPU, so off until a lent device has run its CUDA tests
    out_dir: str = "runs/meta_uscl"
    checkpoint_every: int = 100  # steps; a checkpoint is also written at every epoch end
    max_steps: int = 0  # stop after this many steps in total (0: run all epochs)
    log_every: int = 10  # steps between metrics lines; loss values reach the host only here and at checkpoints
    tensorboard: bool = False
    # the export's user tag (the part after "<arch>."; rule: timm_uscl.names.TAG_RULE); None: the run folder's name
    export_tag: str | None = None
    # online evaluation: frozen-feature kNN + linear probe on a labelled set every `online_every` epochs
    online_eval: str | None = None  # None (off) | a built-in task name (pocus, covid_blues, busi) | a --task-dir folder
    online_every: int = 5
    online_frames: int = 4  # frames per video of the labelled set
    online_max_items: int | None = None  # per fold (None: all)
    online_data_root: str | None = None  # for built-in task names: the data root (default: $TIMM_USCL_DATA)
    # the data pipeline (source, pair_type, image_size, batch_size, ...): see DataConfig
    data: DataConfig = field(default_factory=_trainer_data)

    def validate(self) -> TrainConfig:
        checks = [
            _one_of("optimizer", self.optimizer, OPTIMIZERS),
            _one_of("schedule", self.schedule, SCHEDULES),
            (
                not (self.meta and self.optimizer != "sgd"),
                "meta=true needs optimizer=sgd: the lookahead mirrors an SGD step (set meta=false for Adam)",
            ),
            (self.data.batch_size >= 2, "batch_size must be >= 2 (NT-Xent needs negatives)"),
            (self.meta_interval >= 1, "meta_interval must be >= 1"),
            _one_of("hypergrad", self.hypergrad, HYPERGRADS),
            _one_of("init", self.init, INITS),
            _one_of("bn_views", self.bn_views, BN_VIEWS),
            (self.epochs >= 1, "epochs must be >= 1"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a finite number > 0, not {self.lr}"),
            (math.isfinite(self.cmw_lr) and self.cmw_lr > 0, f"cmw_lr must be a finite number > 0, not {self.cmw_lr}"),
            (self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every and log_every must be >= 1"),
            (self.max_steps >= 0, "max_steps must be >= 0 (0: run every epoch)"),
            _one_of("precision", self.precision, PRECISIONS),
            (self.threads >= 0, "threads must be >= 0 (0: every core)"),
            _one_of("graphs", self.graphs, GRAPH_MODES),
            (self.online_every >= 1 and self.online_frames >= 1, "online_every and online_frames must be >= 1"),
            (self.temperature > 0, "temperature must be > 0"),
            (
                not (self.meta and self.data.meta_fraction <= 0),
                "meta=true needs meta_fraction > 0 (the held-out meta split)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid config: {message}")
        if self.arch not in ARCHITECTURES:  # the export is named <arch>.<tag> in the plugin's registry
            raise ConfigError(f"invalid config: arch must be one of {', '.join(ARCHITECTURES)}, not {self.arch!r}")
        if self.export_tag is not None:
            try:
                check_user_tag(self.export_tag, "export_tag")
            except UnknownWeightsError as err:
                raise ConfigError(f"invalid config: {err} (the tag alone: arch names the architecture)") from None
        return self


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> tuple[bool, str]:
    """A validation check of ``key`` against its table of allowed values, the message derived from the table."""
    names = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
    return value in allowed, f"{key} must be {names}, not {value!r}"


TRAIN_KEYS = frozenset(f.name for f in fields(TrainConfig)) - {"data"}
_TYPES = {**get_type_hints(DataConfig), **{k: v for k, v in get_type_hints(TrainConfig).items() if k != "data"}}


def _accepts(kind: Any, value: Any) -> bool:
    origin = get_origin(kind)
    if origin in (Union, UnionType):
        return any(_accepts(arg, value) for arg in get_args(kind))
    if kind is type(None):
        return value is None
    if kind in (int, float):
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if (origin or kind) is tuple:
        return isinstance(value, (tuple, list))
    return isinstance(value, origin or kind)


def _coerce(key: str, value: Any) -> Any:
    kind = _TYPES[key]
    # "true", "3e-4", "null", "{probe: convex}" from the CLI; an empty text stays text where text is allowed (an
    # empty --export-tag is refused by the validation, not read as null: null is spelled null)
    if isinstance(value, str) and kind is not str and not (value == "" and _accepts(kind, value)):
        try:
            parsed = float(value) if kind is float else yaml.safe_load(value)  # YAML reads "1e-3" as a string
        except (ValueError, yaml.YAMLError):
            parsed = value
        value = parsed if _accepts(kind, parsed) else value
    if not _accepts(kind, value):
        raise ConfigError(f"config key {key!r} needs a {kind}, got {value!r}")
    if kind is float:
        return float(value)
    if get_origin(kind) is tuple:
        return tuple(value)
    return value


LEGACY_KEYS = {"bf16": ("precision", {True: "bf16", False: "fp32", "true": "bf16", "false": "fp32"})}
"""Keys of older configs and checkpoints, read as today's key (``bf16: true`` is ``precision: bf16``)."""


def flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """Flat keys of a config mapping: a nested ``data:`` mapping (what ``save_config`` writes) merged in, and
    :data:`LEGACY_KEYS` read as today's keys."""
    nested = values.get("data")
    flat = {k: v for k, v in values.items() if k != "data"}
    for old, (new, meaning) in LEGACY_KEYS.items():
        if old in flat:
            value = flat.pop(old)
            if new not in flat:
                flat[new] = meaning.get(value.lower() if isinstance(value, str) else value, value)
    return {**flat, **nested} if isinstance(nested, dict) else flat


def _merge(config: TrainConfig, values: dict[str, Any], origin: str) -> TrainConfig:
    values = flat_config(values)
    unknown = sorted(set(values) - TRAIN_KEYS - DATA_KEYS)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown config keys {unknown}; known keys: {', '.join(sorted(TRAIN_KEYS | DATA_KEYS))}"
        )
    typed = {k: _coerce(k, v) for k, v in values.items()}
    data = dataclasses.replace(config.data, **{k: v for k, v in typed.items() if k in DATA_KEYS})
    return dataclasses.replace(config, data=data, **{k: v for k, v in typed.items() if k in TRAIN_KEYS})


def _read_yaml(path: Any, origin: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8") if hasattr(path, "read_text") else Path(path).read_text("utf-8")
        data = yaml.safe_load(text)  # safe_load: a config file never constructs Python objects
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: not UTF-8 text; save the config file as UTF-8 YAML") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{origin}: not valid YAML ({problem}{at}); fix the file (key: value per line)") from None
    except OSError as err:
        raise ConfigError(f"{origin}: cannot be read ({err.strerror or err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a config file must be a YAML mapping of key: value")
    return data


def load_config(
    preset: str = "meta_uscl",
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Preset, then config file, then overrides (``{"epochs": 2}`` or ``{"epochs": "2"}``), validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    preset_file = resources.files("timm_uscl.configs").joinpath(f"{preset}.yaml")
    config = _merge(TrainConfig(), _read_yaml(preset_file, f"preset {preset}"), f"preset {preset}")
    if config_file is not None:
        if not Path(config_file).is_file():
            raise ConfigError(f"{config_file}: config file not found")
        config = _merge(config, _read_yaml(config_file, str(config_file)), str(config_file))
    return _merge(config, dict(overrides or {}), "override").validate()


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False))


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["epochs=2", "meta=false"]`` -> ``{"epochs": "2", "meta": "false"}`` (typed later by the config)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        out[key.strip()] = value
    return out


def data_config(config: TrainConfig) -> DataConfig:
    """The run's data settings, with ``~`` expanded in the frame cache path."""
    cache = str(Path(config.data.cache_dir).expanduser()) if config.data.cache_dir else None
    return dataclasses.replace(config.data, cache_dir=cache)
