"""Publishing a folder of videos as a Hub dataset: shards, card, push, and a streamed round trip."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("datasets")
pytest.importorskip("torchcodec")


@pytest.fixture
def corpus(tmp_path: Path, synthetic_clips: list[Path]) -> Path:
    root = tmp_path / "corpus"
    (root / "clips").mkdir(parents=True)
    with (root / "metadata.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "source", "licence", "fold"])
        for i, clip in enumerate(synthetic_clips):
            shutil.copy(clip, root / "clips" / clip.name)
            w.writerow([f"clips/{clip.name}", "synth_a" if i else "synth_b", "CC-BY-4.0" if i else "CC-BY-NC-4.0", i])
    return root


def test_build_shards_and_card(corpus: Path, tmp_path: Path) -> None:
    from timm_uscl.training.data.publish import build_shards, render_dataset_card

    shards, rows = build_shards(corpus, tmp_path / "out", max_videos_per_shard=2)
    assert [p.name for p in shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    card = render_dataset_card(rows, repo_id="org/synth", citation="@article{x}", num_shards=len(shards))
    assert "license: other" in card and "| CC-BY-NC-4.0 | 1 |" in card and "| clips/clip1.mp4 | CC-BY-4.0 |" in card
    assert "@article{x}" in card and "path: data/train-*.parquet" in card


def test_publish_round_trip_through_pipeline(corpus: Path, hub) -> None:
    from datasets import load_dataset
    from huggingface_hub import HfApi

    from timm_uscl.training.cli.publish import register
    from timm_uscl.training.data import DataConfig, PairDataModule

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["publish-dataset", str(corpus), "stub-user/synth-us", "--max-videos-per-shard", "1"])
    assert args.func(args) == 0

    files = hub.files("stub-user/synth-us", repo_type="dataset")
    assert "README.md" in files and sum(f.endswith(".parquet") for f in files) == 3
    assert HfApi().repo_info("stub-user/synth-us", repo_type="dataset").id == "stub-user/synth-us"

    ds = load_dataset("stub-user/synth-us", split="train", streaming=True)
    assert ds.num_shards == 3
    ex = next(iter(ds))
    assert ex["video"].metadata.num_frames == 24 and {"source", "licence", "fold"} <= set(ex)

    dm = PairDataModule(
        DataConfig(source="stub-user/synth-us", batch_size=2, num_workers=0, meta_fraction=0.0, image_size=32)
    )
    batches = list(dm.train_loader(0))
    assert len(batches) == 1 and batches[0].frames.shape == (2, 2, 1, 32, 32)
    assert set(batches[0].sources) <= {"synth_a", "synth_b"} and dm.stats.decoded == 3
    x1, x2 = dm.gpu_views(batches[0], "cpu")
    assert x1.shape == x2.shape == (2, 3, 32, 32)


# -- only the videos of FOLDER, listed before anything is pushed, private unless asked (H1) -------------------------


def _run(argv: list[str]) -> int:
    from timm_uscl.training.cli.publish import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["publish-dataset", *argv])
    return args.func(args)


def _hostile(tmp_path: Path, clip: Path, entry: str) -> tuple[Path, str]:
    root = tmp_path / "pub"
    root.mkdir()
    shutil.copy(clip, root / "a.mp4")
    secret = tmp_path / "secret.txt"
    secret.write_text("pretend-secret-token\n")
    outside_video = tmp_path / "outside.mp4"
    shutil.copy(clip, outside_video)
    name = {
        "dotdot": "../secret.txt",
        "absolute": "/etc/hostname",
        "dotdot_video": "../outside.mp4",
        "symlink_out": "innocent.mp4",
        "symlink_in": "alias.mp4",
        "not_a_video": "notes.txt",
        "folder": "sub.mp4",
    }[entry]
    if entry == "symlink_out":
        (root / name).symlink_to(secret)
    if entry == "symlink_in":
        shutil.copy(clip, root / "other.mp4")
        (root / name).symlink_to(root / "other.mp4")
    if entry == "not_a_video":
        (root / name).write_text("a note\n")
    if entry == "folder":
        (root / name).mkdir()
    (root / "metadata.csv").write_text(f"file_name,licence\na.mp4,CC-BY-4.0\n{name},CC-BY-4.0\n")
    return root, name


@pytest.mark.parametrize(
    "entry", ["dotdot", "absolute", "dotdot_video", "symlink_out", "symlink_in", "not_a_video", "folder"]
)
def test_publish_refuses_any_row_that_is_not_a_video_file_inside_the_folder(
    tmp_path: Path, synthetic_clips: list[Path], entry: str
) -> None:
    from timm_uscl.training.errors import DataError

    root, name = _hostile(tmp_path, synthetic_clips[0], entry)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        _run([str(root), "someone/ds", "--dry-run", "--out-dir", str(out)])
    message = str(err.value)
    assert "\n" not in message and "metadata.csv row 3" in message and name in message
    assert not list(out.rglob("*.parquet")) and not (out / "README.md").exists()


def test_publish_refuses_a_symlink_even_without_metadata(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    from timm_uscl.training.errors import DataError

    root = tmp_path / "pub"
    root.mkdir()
    shutil.copy(synthetic_clips[0], root / "a.mp4")
    (root / "b.mp4").symlink_to(synthetic_clips[1])
    with pytest.raises(DataError, match=r"b\.mp4.*symbolic link"):
        _run([str(root), "someone/ds", "--dry-run", "--out-dir", str(tmp_path / "out")])


def test_publish_refuses_a_hard_link_named_like_a_video(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    """N9: ``ln ~/token pub/innocent.mp4`` put the token file into the parquet shards."""
    from timm_uscl.training.errors import DataError

    root = tmp_path / "pub"
    root.mkdir()
    shutil.copy(synthetic_clips[0], root / "a.mp4")
    secret = tmp_path / "token"
    secret.write_text("hf_FAKE")
    os.link(secret, root / "innocent.mp4")
    with pytest.raises(DataError, match=r"innocent\.mp4.*2 hard links.*replace it by a copy") as info:
        _run([str(root), "someone/ds", "--dry-run", "--out-dir", str(tmp_path / "out")])
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_publish_refuses_a_non_empty_out_dir(corpus: Path, tmp_path: Path) -> None:
    from timm_uscl.training.errors import DataError

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(DataError, match="not empty"):
        _run([str(corpus), "org/synth", "--dry-run", "--out-dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_publish_lists_every_file_size_and_licence_before_pushing(
    corpus: Path, hub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    printed_before_push: list[str] = []
    real_create = HfApi.create_repo

    def create_repo(self, *args, **kwargs):
        printed_before_push.append(capsys.readouterr().out)
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    assert _run([str(corpus), "stub-user/listed"]) == 0
    listing = printed_before_push[0]
    for clip in sorted((corpus / "clips").iterdir()):
        line = next(ln for ln in listing.splitlines() if f"clips/{clip.name}" in ln)
        assert str(clip.stat().st_size) in line.replace(",", "") or f"{clip.stat().st_size / 1024:.1f} KiB" in line
    assert "CC-BY-NC-4.0" in listing and "3 files" in listing and "private" in listing


def test_publish_creates_a_private_repo_unless_public_is_asked(corpus: Path, hub) -> None:
    from huggingface_hub import HfApi

    assert _run([str(corpus), "stub-user/quiet"]) == 0
    assert HfApi().repo_info("stub-user/quiet", repo_type="dataset").private is True
    assert _run([str(corpus), "stub-user/quiet2", "--private"]) == 0  # kept: an accepted no-op
    assert HfApi().repo_info("stub-user/quiet2", repo_type="dataset").private is True
    assert _run([str(corpus), "stub-user/loud", "--public"]) == 0
    assert HfApi().repo_info("stub-user/loud", repo_type="dataset").private is False


def test_publish_will_not_push_into_an_existing_public_repo_without_public(corpus: Path, hub) -> None:
    from huggingface_hub import HfApi

    from timm_uscl.training.errors import PublishError

    HfApi().create_repo("stub-user/open", repo_type="dataset", private=False)
    with pytest.raises(PublishError, match="stub-user/open.*public.*--public"):
        _run([str(corpus), "stub-user/open"])
    assert not [f for f in hub.files("stub-user/open", repo_type="dataset") if f.endswith(".parquet")]


def test_publish_errors_are_one_line(corpus: Path, hub, monkeypatch: pytest.MonkeyPatch) -> None:
    from timm_uscl.training.errors import PublishError

    with pytest.raises(PublishError, match="repo id"):
        _run([str(corpus), "../../etc"])
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(PublishError) as err:
        _run([str(corpus), "stub-user/unreachable"])
    assert "\n" not in str(err.value) and "stub-user/unreachable" in str(err.value)


# -- the dataset card's metadata follows the Hub's conventions (issue 11.5) ------------------------------------------


def _card_data(text: str):
    from huggingface_hub import DatasetCard

    return DatasetCard(text).data


def _size_categories() -> list[str]:
    import json
    from importlib import resources

    return json.loads(resources.files("datasets.utils.resources").joinpath("size_categories.json").read_text())


def test_mixed_licences_give_license_other_with_a_name_and_a_link(corpus: Path, tmp_path: Path) -> None:
    from timm_uscl.training.data.publish import build_shards, render_dataset_card

    shards, rows = build_shards(corpus, tmp_path / "out")
    data = _card_data(render_dataset_card(rows, repo_id="org/synth", num_shards=len(shards)))
    assert data.license == "other"
    assert data.license_name and data.license_name == data.license_name.lower() and " " not in data.license_name
    assert data.license_link == "LICENSE.md"
    assert data.size_categories == ["n<1K"] and set(data.size_categories) <= set(_size_categories())
    assert data.task_categories and "video-classification" in data.task_categories
    assert data.pretty_name == "synth" and data.configs[0]["data_files"][0]["path"] == "data/train-*.parquet"


def test_publish_writes_the_licence_file_the_card_links_to(corpus: Path, tmp_path: Path) -> None:
    assert _run([str(corpus), "org/synth", "--dry-run", "--out-dir", str(tmp_path / "out")]) == 0
    licence = (tmp_path / "out" / "LICENSE.md").read_text()
    assert "clips/clip0.mp4" in licence and "CC-BY-NC-4.0" in licence and "CC-BY-4.0" in licence
    assert _card_data((tmp_path / "out" / "README.md").read_text()).license_link == "LICENSE.md"


def test_a_single_hub_licence_is_used_as_is(corpus: Path, tmp_path: Path) -> None:
    from timm_uscl.training.data.publish import build_shards, render_dataset_card

    meta = corpus / "metadata.csv"
    meta.write_text(meta.read_text().replace("CC-BY-NC-4.0", "CC-BY-4.0"))
    shards, rows = build_shards(corpus, tmp_path / "out")
    data = _card_data(render_dataset_card(rows, repo_id="org/synth", num_shards=len(shards)))
    assert data.license == "cc-by-4.0" and data.get("license_name") is None and data.get("license_link") is None


def test_an_unknown_single_licence_becomes_other_with_its_name(corpus: Path, tmp_path: Path) -> None:
    from timm_uscl.training.data.publish import build_shards, render_dataset_card

    meta = corpus / "metadata.csv"
    text = meta.read_text().replace("CC-BY-NC-4.0", "Research only").replace("CC-BY-4.0", "Research only")
    meta.write_text(text)
    shards, rows = build_shards(corpus, tmp_path / "out")
    card = render_dataset_card(
        rows, repo_id="org/synth", num_shards=len(shards), task_categories=["image-feature-extraction"]
    )
    data = _card_data(card)
    assert data.license == "other" and data.license_name == "research-only" and data.license_link == "LICENSE.md"
    assert data.task_categories == ["image-feature-extraction"]


def test_an_unknown_task_category_is_refused() -> None:
    from timm_uscl.training.data.publish import render_dataset_card
    from timm_uscl.training.errors import DataError

    rows = [{"video": {"path": "a.mp4", "bytes": None}, "key": "a.mp4", "source": "x"}]
    with pytest.raises(DataError, match="task category 'ultrasound'"):
        render_dataset_card(rows, repo_id="org/x", task_categories=["ultrasound"])
