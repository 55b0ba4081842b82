"""Export -> push -> load round trips through the real huggingface_hub client and the loopback Hub stub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import timm_uscl
from timm_uscl import WEIGHTS, ChecksumMismatchError, WeightsUnavailableError
from timm_uscl.checksum import sha256_file
from timm_uscl.cli import main as cli
from timm_uscl.weights import with_publication

NAME = "resnet18_uscl.metauscl_us4_64"


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def published(hub, source, tmp_path, monkeypatch):
    """Export `source`, push it with the CLI, and record the printed revision/sha256 in the table."""
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    repo_id = WEIGHTS[NAME].repo_id
    assert cli(["push", str(export_dir), "--repo-id", repo_id]) == 0
    revision = hub.commits(repo_id)[-1]
    sha = sha256_file(export_dir / "model.safetensors")
    monkeypatch.setitem(WEIGHTS, NAME, with_publication(WEIGHTS[NAME], revision=revision, sha256=sha))
    return export_dir


def test_push_prints_revision_and_sha_but_never_the_token(hub, source, tmp_path, capsys):
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    assert cli(["push", str(export_dir), "--repo-id", "someone/uscl-test"]) == 0
    out = capsys.readouterr().out
    revision = hub.commits("someone/uscl-test")[-1]
    assert f"revision: {revision}" in out and sha256_file(export_dir / "model.safetensors") in out
    assert os.environ["HF_TOKEN"] not in out
    assert set(hub.files("someone/uscl-test")) >= {"config.json", "model.safetensors", "README.md"}
    assert hub.files("someone/uscl-test")["model.safetensors"] == (export_dir / "model.safetensors").read_bytes()


def test_push_dry_run_uploads_nothing(hub, source, tmp_path, capsys):
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    hub.reset_log()
    assert cli(["push", str(export_dir), "--repo-id", "someone/dry", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload to someone/dry, a private repo (unless it exists already)" in out
    assert out.split(": ", 1)[1].startswith("README.md, config.json, model.safetensors")
    assert hub.requests == []


def test_push_of_a_non_export_folder_is_a_clear_error(hub, tmp_path, capsys):
    assert cli(["push", str(tmp_path), "--repo-id", "someone/x"]) == 1
    assert "config.json is missing" in capsys.readouterr().err


def test_registry_name_and_hf_hub_give_identical_weights(published, source):
    by_tag = timm.create_model(NAME, pretrained=True)
    by_repo = timm.create_model(f"hf-hub:{WEIGHTS[NAME].repo_id}", pretrained=True)
    assert _same_weights(by_tag, source) and _same_weights(by_repo, source)

    def data_cfg(model):
        return {
            k: tuple(v) if isinstance(v, list) else v for k, v in timm.data.resolve_model_data_config(model).items()
        }

    assert data_cfg(by_tag) == data_cfg(by_repo)
    assert data_cfg(by_repo)["mean"] == (0.18,) * 3 and data_cfg(by_repo)["input_size"] == (3, 64, 64)


def test_pinned_revision_survives_a_later_push(published, hub, tmp_path):
    other = timm.create_model("resnet18_uscl")
    timm_uscl.push(timm_uscl.export(other, tmp_path / "other", NAME), WEIGHTS[NAME].repo_id)
    assert _same_weights(
        timm.create_model(NAME, pretrained=True), timm.create_model(f"local-dir:{published}", pretrained=True)
    )


@pytest.fixture
def warmed(published):
    timm.create_model(NAME, pretrained=True)
    return published


def test_warm_cache_offline_makes_zero_requests(warmed, hub, offline):
    hub.reset_log()
    model = timm.create_model(NAME, pretrained=True, features_only=True, out_indices=(4,))
    assert model(torch.randn(1, 3, 64, 64))[0].shape[1] == 512
    assert hub.requests == []


def test_warm_cache_offline_in_a_fresh_process(warmed, hub):
    hub.reset_log()
    entry = WEIGHTS[NAME]  # the published row, as the fixture recorded it
    code = (
        "import timm, timm_uscl\n"
        "from timm_uscl.weights import WEIGHTS, with_publication\n"
        f"WEIGHTS[{NAME!r}] = with_publication(WEIGHTS[{NAME!r}], {entry.revision!r}, {entry.sha256!r})\n"
        f"print(timm.create_model({NAME!r}, pretrained=True).num_features)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "512" and hub.requests == []


def test_cold_cache_offline_is_a_clear_error(published, offline):
    with pytest.raises(WeightsUnavailableError, match=r"not in the local cache.*timm-uscl pull"):
        timm.create_model(NAME, pretrained=True)


def test_corrupted_download_fails_the_checksum(published, hub):
    hub.corrupt(WEIGHTS[NAME].repo_id, "model.safetensors", data=b"\0" * 1024)
    with pytest.raises(ChecksumMismatchError, match=r"checksum mismatch for .*model\.safetensors"):
        timm.create_model(NAME, pretrained=True)


def test_corrupted_cache_file_fails_the_checksum(warmed):
    cached = timm_uscl.fetch_weights(WEIGHTS[NAME])
    Path(os.path.realpath(cached)).write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatchError, match=str(cached)):
        timm.create_model(NAME, pretrained=True)


def test_missing_repo(hub, monkeypatch):
    entry = with_publication(WEIGHTS[NAME], revision="a" * 40, sha256="0" * 64)
    monkeypatch.setitem(WEIGHTS, NAME, entry)
    with pytest.raises(WeightsUnavailableError, match=r"repo timm-uscl/resnet18_uscl.metauscl_us4_64 does not exist"):
        timm.create_model(NAME, pretrained=True)


def test_missing_file_in_existing_repo(published, monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(WEIGHTS, NAME, replace(WEIGHTS[NAME], filename="weights.safetensors"))
    with pytest.raises(WeightsUnavailableError, match=r"weights\.safetensors of .* does not exist"):
        timm.create_model(NAME, pretrained=True)


def test_pull_prefetches_then_offline_loads(published, hub, capsys, monkeypatch):
    assert cli(["pull", NAME]) == 0
    assert "verified" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    hub.reset_log()
    timm.create_model(NAME, pretrained=True)
    assert hub.requests == []


def test_export_loads_in_plain_timm_without_the_plugin(published, source, tmp_path):
    """local-dir: and hf-hub: work in a Python that never imported timm_uscl."""
    torch.save(source(torch.ones(1, 3, 64, 64)).detach(), tmp_path / "expected.pt")
    code = (
        "import sys, timm, torch\n"
        f"x = torch.ones(1, 3, 64, 64); expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        f"for name in ('local-dir:{published}', 'hf-hub:{WEIGHTS[NAME].repo_id}'):\n"
        "    m = timm.create_model(name, pretrained=True).eval()\n"
        "    assert torch.allclose(m(x), expected, atol=1e-6), name\n"
        "    assert tuple(m.pretrained_cfg['mean']) == (0.18, 0.18, 0.18), m.pretrained_cfg\n"
        "assert 'timm_uscl' not in sys.modules\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_model_card_metadata_and_body(published):
    card = (published / "README.md").read_text()
    header = card.split("---")[1]
    for needle in (
        "library_name: timm",
        "license: mit",
        "pipeline_tag: image-feature-extraction",
        "ultrasound",
    ):
        assert needle in header
    assert "model-index:" not in header, "the authors' reported figures describe their checkpoint, not these weights"
    for needle in (
        "features_only=True",
        "in_chans=1",
        "smp.Unet(",
        "mean **0.18**",
        "2212.04097",
        "2011.13066",
        "US-4",
    ):
        assert needle in card
    config = json.loads((published / "config.json").read_text())
    assert config["timm_uscl"]["sha256"] == sha256_file(published / "model.safetensors")


def test_smp_unet_encoder_gets_the_published_weights(published, source):
    import segmentation_models_pytorch as smp

    net = smp.Unet(f"tu-{NAME}", encoder_weights=True, in_channels=3, classes=1)
    encoder = net.encoder.model.state_dict()
    expected = source.state_dict()
    assert encoder and all(torch.equal(v, expected[k]) for k, v in encoder.items())


# L1 and L7: push fails on one line, and --dry-run checks what a real push checks


@pytest.mark.parametrize("dry_run", [False, True])
def test_push_with_an_invalid_repo_id_is_a_one_line_hub_error(hub, source, tmp_path, capsys, dry_run):
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    hub.reset_log()
    args = ["push", str(export_dir), "--repo-id", "../../etc"] + (["--dry-run"] if dry_run else [])
    assert cli(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "../../etc" in err and "ORG/NAME" in err
    assert hub.requests == []


def test_push_to_an_unreachable_hub_is_one_line_and_never_prints_the_token(source, tmp_path):
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_secret_token_never_printed"}
    proc = subprocess.run(
        [sys.executable, "-m", "timm_uscl.cli", "push", str(export_dir), "--repo-id", "someone/x"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "http://127.0.0.1:9" in proc.stderr and "someone/x" in proc.stderr
    assert "hf_secret_token_never_printed" not in proc.stderr + proc.stdout


def _break(export_dir: Path, how: str) -> None:
    config = export_dir / "config.json"
    if how == "garbage config.json":
        config.write_text("{not json")
    elif how == "unknown architecture":
        config.write_text(config.read_text().replace('"architecture": "resnet18"', '"architecture": "no_such_net"'))
    elif how == "weights replaced":
        weights = export_dir / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    elif how == "no timm_uscl block":
        data = json.loads(config.read_text())
        del data["timm_uscl"]
        config.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "how, needle",
    [
        ("garbage config.json", "config.json is not valid JSON"),
        ("unknown architecture", "no_such_net"),
        ("weights replaced", "sha256"),
        ("no timm_uscl block", "timm_uscl"),
    ],
)
def test_push_dry_run_validates_the_export_as_a_real_push_would(hub, source, tmp_path, capsys, how, needle):
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    _break(export_dir, how)
    hub.reset_log()
    for extra in (["--dry-run"], []):
        assert cli(["push", str(export_dir), "--repo-id", "someone/x", *extra]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and str(export_dir) in err
    assert hub.requests == []


def test_push_uploads_only_the_exports_own_files_and_refuses_a_planted_link(hub, source, tmp_path, capsys):
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    secret = tmp_path / "token.txt"
    secret.write_text("hf_SECRET")
    (export_dir / "notes.txt").symlink_to(secret)
    hub.reset_log()
    assert cli(["push", str(export_dir), "--repo-id", "someone/leak"]) == 1
    err = capsys.readouterr().err
    assert "notes.txt" in err and "never uploaded" in err and "hf_SECRET" not in err
    assert hub.requests == []  # refused before any request
    (export_dir / "notes.txt").unlink()
    (export_dir / "draft.txt").write_text("mine")
    assert cli(["push", str(export_dir), "--repo-id", "someone/leak", "--dry-run"]) == 1  # a stray file too


def test_push_creates_a_private_repo_unless_public_is_asked(hub, source, tmp_path):
    from huggingface_hub import HfApi

    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    assert cli(["push", str(export_dir), "--repo-id", "someone/quiet"]) == 0
    assert HfApi().model_info("someone/quiet").private is True
    assert cli(["push", str(export_dir), "--repo-id", "someone/loud", "--public"]) == 0
    assert HfApi().model_info("someone/loud").private is False


def test_push_uploads_the_card_its_record_renders_never_a_hand_edited_row(hub, source, tmp_path):
    """N4: a hand-edited card row ("99.9 ... measured") was uploaded verbatim."""
    export_dir = timm_uscl.export(source, tmp_path / "export", NAME)
    rendered = (export_dir / "README.md").read_bytes()
    card = export_dir / "README.md"
    card.write_text(card.read_text().replace("_No evaluation results", "| BUSI | accuracy | 99.9 | measured |\n\n_No"))
    assert cli(["push", str(export_dir), "--repo-id", "someone/edited"]) == 0
    uploaded = hub.files("someone/edited")["README.md"]
    assert b"99.9" not in uploaded and uploaded != rendered  # the record's card, pointed at the repo pushed to
    assert uploaded == (export_dir / "README.md").read_bytes() and b"someone/edited" in uploaded
