"""Presets, config files and command-line overrides resolve to one typed, validated config."""

from __future__ import annotations

import dataclasses

import pytest

from timm_uscl.training.config import (
    PRESETS,
    ConfigError,
    TrainConfig,
    data_config,
    load_config,
    parse_overrides,
    save_config,
)
from timm_uscl.training.data.config import DataConfig


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_match_their_recipe(preset):
    config = load_config(preset)
    assert config.preset == preset and config.temperature == 0.5 and config.data.batch_size == 32
    expected = {
        "meta_uscl": ("metauscl", "sgd", True, 0.18),
        "uscl": ("uscl", "adam", False, 0.5),
        "simclr": ("simclr", "sgd", False, 0.18),
    }[preset]
    assert (config.data.pair_type, config.optimizer, config.meta, config.data.mean) == expected


def test_overrides_are_typed_from_strings():
    overrides = parse_overrides(
        [
            "epochs=2",
            "lr=1e-3",
            "meta=false",
            "exclude={fold: 0}",
            "crop_ratio=[0.75, 1.3]",
            "cache_dir=null",
            "source=org/name",
        ]
    )
    config = load_config("meta_uscl", overrides={**overrides, "meta": "false", "optimizer": "sgd"})
    assert (config.epochs, config.lr, config.meta, config.data.exclude) == (2, 0.001, False, {"fold": 0})
    assert config.data.crop_ratio == (0.75, 1.3) and config.data.cache_dir is None and config.data.source == "org/name"


def test_bad_configs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config keys \\['epocs'\\]"):
        load_config("meta_uscl", overrides={"epocs": "3"})
    with pytest.raises(ConfigError, match="'epochs' needs"):
        load_config("meta_uscl", overrides={"epochs": "many"})
    with pytest.raises(ConfigError, match="meta=true needs optimizer=sgd"):
        load_config("uscl", overrides={"meta": "true"})
    with pytest.raises(ConfigError, match="hypergrad must be auto, linearised, jvp or double_backward"):
        load_config("meta_uscl", overrides={"hypergrad": "finite_differences"})
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("mocov2")
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("meta_uscl", config_file=tmp_path / "missing.yaml")


def test_saved_config_reloads_to_the_same_run(tmp_path):
    config = load_config("uscl", overrides={"epochs": 7, "crop_ratio": [0.7, 1.4], "filters": {"probe": "convex"}})
    save_config(config, tmp_path / "config.yaml")
    again = load_config("meta_uscl", config_file=tmp_path / "config.yaml")
    assert again == config


def test_data_part_is_the_data_config():
    config = load_config("meta_uscl", overrides={"cache_dir": "~/frames", "image_size": 32})
    data = data_config(config)
    assert data.image_size == 32 and data.cache_dir is not None and not data.cache_dir.startswith("~")
    assert dataclasses.replace(data, cache_dir=config.data.cache_dir) == config.data


@pytest.mark.parametrize(
    "content,message",
    [
        (b"epochs: [1, 2\n", "not valid YAML .* at line"),
        (b"lr: 0.1\nsource: caf\xe9\n", "not UTF-8"),
        (b"!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
        (b"- a list\n", "must be a YAML mapping"),
    ],
)
def test_a_broken_hostile_or_non_utf8_config_file_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config("meta_uscl", config_file=path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("key,value", [("lr", "nan"), ("lr", "0"), ("cmw_lr", "inf"), ("log_every", "0")])
def test_non_finite_or_non_positive_rates_are_refused_up_front(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config("meta_uscl", overrides={key: value})


def test_every_setting_has_one_owner_and_one_name():
    train = {f.name for f in dataclasses.fields(TrainConfig)}
    assert train & {f.name for f in dataclasses.fields(DataConfig)} == set()
    assert not hasattr(TrainConfig(), "image_size") and not hasattr(TrainConfig(), "seed")


@pytest.mark.parametrize("spelling", [{"seed": 3}, {"seed": "3"}, {"data": {"seed": 3}}])
def test_a_seed_set_flat_or_nested_is_the_one_seed_of_the_run(spelling):
    assert load_config("meta_uscl", overrides=spelling).data.seed == 3


def test_a_config_yaml_that_wrote_the_seed_twice_still_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("seed: 4\nepochs: 2\ndata:\n  seed: 4\n  image_size: 32\n")
    config = load_config("meta_uscl", config_file=path)
    assert (config.data.seed, config.epochs, config.data.image_size) == (4, 2, 32)


@pytest.mark.parametrize(
    "key,message",
    [
        ("optimizer", "optimizer must be sgd or adam"),
        ("schedule", "schedule must be metauscl, uscl or constant"),
        ("init", "init must be timm or torchvision"),
        ("bn_views", "bn_views must be per_view or joint"),
        ("graphs", "graphs must be auto, on or off"),
    ],
)
def test_a_value_outside_a_settings_table_names_the_allowed_values(key, message):
    with pytest.raises(ConfigError, match=message):
        load_config("meta_uscl", overrides={key: "nonsense"})


def test_the_presets_are_the_preset_files_default_first():
    assert PRESETS[0] == "meta_uscl" and set(PRESETS) == {"meta_uscl", "uscl", "simclr"}
