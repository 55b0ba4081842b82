"""A trainer export is named after its run and its card describes that run, claiming no results it did not earn
(issue 9.2, M7; issue 18.1: the run's own name, never a built-in tag)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from timm_uscl.training.config import load_config
from timm_uscl.training.engine import pretrain

SMOKE = {  # the README smoke run
    "image_size": 32,
    "batch_size": 3,
    "num_workers": 0,
    "meta_batch_size": 2,
    "meta_fraction": 0.3,
    "cache_dir": None,
    "epochs": 1,
}


def test_the_smoke_run_card_names_its_data_size_and_steps_and_holds_no_results(fixtures_dir: Path, tmp_path: Path):
    source = fixtures_dir / "pocus_videos"
    config = load_config("meta_uscl", overrides={**SMOKE, "source": str(source), "out_dir": str(tmp_path / "run")})
    result = pretrain(config, progress=False)
    assert result.export_dir is not None
    card = (result.export_dir / "README.md").read_text()
    assert result.steps == 2
    assert str(source) in card and "32px" in card and "2 steps" in card
    assert "COVID-BLUES at 64px" not in card  # the weights-table row's description is not this run's
    for measured in ("57.2", "43.9", "model-index", "| accuracy"):  # the row's CPU-budget results
        assert measured not in card, measured
    facts = json.loads((result.export_dir / "config.json").read_text())["timm_uscl"]
    run = dict(facts["run"]) if isinstance(facts["run"], list) else facts["run"]
    assert run["image size"] == "32 px" and run["steps"] == str(result.steps) and run["data"] == str(source)
    assert "commit" in run and run["initialisation"] == config.init
    assert run["precision"] in ("fp32", "bf16")  # resolved: what the steps computed in, never "auto"
    assert run["data path"] == "frame store"  # store=auto on a CPU, the fixtures fit


def test_a_full_disk_at_the_export_is_a_one_line_error_that_keeps_the_checkpoint_usable(small_disk, tmp_path):
    import pytest

    from timm_uscl.training.errors import RunFolderError
    from timm_uscl.training.model import ContrastiveModel
    from timm_uscl.training.run_export import export_run

    disk = small_disk("2m")  # a resnet18 backbone is ~45 MB
    config = load_config("meta_uscl", overrides={**SMOKE, "source": "videos", "out_dir": str(disk)})
    with pytest.raises(RunFolderError, match="export could not be written .*--resume to export again") as info:
        export_run(config, ContrastiveModel("resnet18_uscl"), None, disk, steps=2, commit=None)
    assert "\n" not in str(info.value)
    assert not any(p.name != "lost+found" for p in disk.iterdir())  # no half-written export left behind


def test_a_run_stopped_by_max_steps_reports_the_epochs_it_completed_not_the_planned_ones(clip_folder, tmp_path):
    overrides = {**SMOKE, "meta_fraction": 0.2, "epochs": 300, "max_steps": 1, "source": str(clip_folder)}
    result = pretrain(
        load_config("meta_uscl", overrides={**overrides, "out_dir": str(tmp_path / "run")}), progress=False
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (result.epochs, summary["epochs"], summary["epochs_planned"], summary["steps"]) == (0, 0, 300, 1)
    assert result.export_dir is not None
    card = (result.export_dir / "README.md").read_text()
    assert "0 epochs of 300 planned (stopped by max_steps), 1 steps" in card and "| 300 |" not in card


def test_the_export_is_named_after_the_run_folder_or_export_tag_never_a_builtin_tag(tmp_path: Path):
    from timm_uscl.training.run_export import run_entry, run_name

    for preset in ("meta_uscl", "uscl", "simclr"):
        config = load_config(preset, overrides={**SMOKE, "source": "videos", "out_dir": str(tmp_path / "My Run")})
        assert run_name(config) == "resnet18_uscl.my_run"
    named = load_config("uscl", overrides={**SMOKE, "source": "videos", "export_tag": "lungs-v2"})
    entry = run_entry(named, steps=2, commit=None)
    assert entry.name == "resnet18_uscl.lungs-v2" and entry.repo_id == "" and entry.license == "unknown"
    assert "not checked by the trainer" in entry.pretrain_data_license and entry.pretrain_data == "videos"
    covid = load_config("meta_uscl", overrides={"source": "data/covid_blues", "export_tag": "cb"})
    entry = run_entry(covid, steps=2, commit=None)
    assert entry.license == "cc-by-nc-nd-4.0" and "CC BY-NC-ND 4.0" in entry.pretrain_data_license
    assert entry.datasets == ("jannisborn/COVID-BLUES",)


@pytest.mark.parametrize("tag", ["", "metauscl_covidblues_64", "resnet18_uscl.mine", "a b", "x" * 65])
def test_a_bad_export_tag_is_refused_on_one_line_with_the_rule_before_the_run_folder_is_claimed(tag, tmp_path):
    from timm_uscl.training.errors import ConfigError

    with pytest.raises(ConfigError, match="export_tag .* a tag is 1 to 64 characters") as info:
        load_config("meta_uscl", overrides={"export_tag": tag, "out_dir": str(tmp_path / "run")})
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


def _readme_block(after: str, language: str) -> str:
    """The first ``language`` block of README.md after the text ``after``."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(rf"```{language}\n(.*?)```", text[text.index(after) :], re.S)
    assert found is not None, f"README.md has no {language} block after {after!r}"
    return found.group(1)


def test_the_readme_smoke_run_installs_and_loads_by_its_own_name_as_written(
    fixtures_dir: Path, tmp_path: Path, store, monkeypatch
):
    """README: the smoke run, then `timm-uscl install runs/smoke/export`, then create_model by the run's name."""
    import timm

    from timm_uscl.cli import main as cli

    command = _readme_block("A CPU smoke run on the test fixtures", "bash").replace("\\\n", " ")
    argv = shlex.split(command.replace("../shared/data", str(fixtures_dir.parent)))
    assert argv[0] == ".venv/bin/timm-uscl"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # the frame cache (~/.cache/timm-uscl/frames) of this test only
    assert cli(argv[1:]) == 0
    install = _readme_block("**The local weights store**", "bash")
    for line in install.splitlines():
        if line.startswith("timm-uscl install runs/smoke/export"):
            assert cli(shlex.split(line.split("#")[0])[1:]) == 0
    load = _readme_block("**The local weights store**", "python")
    namespace: dict = {"timm": timm}
    exec(load, namespace)  # the README's line, as written
    model = namespace["model"]
    assert model.pretrained_cfg["tag"] == "smoke" and model.pretrained_cfg["input_size"] == (3, 32, 32)
    card = (tmp_path / "runs" / "smoke" / "export" / "README.md").read_text()
    assert "# resnet18_uscl.smoke" in card and "COVID-BLUES" not in card and os.fspath(fixtures_dir) in card
