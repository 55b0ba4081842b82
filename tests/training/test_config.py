"""Presets, config files and command-line overrides resolve to one typed, validated config."""

from __future__ import annotations

import dataclasses

import pytest

from timm_uscl.training.config import PRESETS, ConfigError, data_config, load_config, parse_overrides, save_config


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_match_their_recipe(preset):
    config = load_config(preset)
    assert config.preset == preset and config.temperature == 0.5 and config.batch_size == 32
    expected = {
        "meta_uscl": ("metauscl", "sgd", True, 0.18),
        "uscl": ("uscl", "adam", False, 0.5),
        "simclr": ("simclr", "sgd", False, 0.18),
    }[preset]
    assert (config.pair_type, config.optimizer, config.meta, config.mean) == expected


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
    assert (config.epochs, config.lr, config.meta, config.exclude) == (2, 0.001, False, {"fold": 0})
    assert config.crop_ratio == (0.75, 1.3) and config.cache_dir is None and config.source == "org/name"


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
    assert data.image_size == 32 and not data.cache_dir.startswith("~")
    assert all(
        getattr(data, f.name) == getattr(config, f.name) for f in dataclasses.fields(data) if f.name != "cache_dir"
    )


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
