"""One decoder, three backends: torchcodec, PyAV and OpenCV give the same frames on every fixture container."""

from __future__ import annotations

import csv
import logging
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from clips import make_clip
from timm_uscl.training.data import decode
from timm_uscl.training.data.config import DataConfig
from timm_uscl.training.data.decode import DECODERS, decode_clip, read_frames, resolve_decoder
from timm_uscl.training.errors import DataError, DecodeError

pytest.importorskip("torchcodec")


def _fixture_videos(fixtures_dir: Path) -> list[dict[str, str]]:
    with (fixtures_dir / "manifest.csv").open() as f:
        return [r for r in csv.DictReader(f) if r["fps"]]


def _recording(lengths: list[int], choose: Callable[[int], Sequence[int]]) -> Callable[[int], Sequence[int]]:
    """``choose`` that also records the frame counts it was given."""

    def wrapped(n: int) -> Sequence[int]:
        lengths.append(n)
        return choose(n)

    return wrapped


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test chooses (and logs) its decoder afresh."""
    monkeypatch.setattr(decode, "_CHOSEN", {})


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_every_backend_matches_torchcodec_on_every_fixture_container(fixtures_dir: Path, backend: str) -> None:
    pytest.importorskip("cv2" if backend == "opencv" else "av")
    videos = _fixture_videos(fixtures_dir)
    assert {Path(r["file"]).suffix for r in videos} >= {".mp4", ".mov", ".mpeg", ".avi", ".gif"}
    for r in videos:
        path = fixtures_dir / r["file"]
        want = decode_clip(path, 32, grayscale=False, decoder="torchcodec")
        got = decode_clip(path, 32, grayscale=False, decoder=backend)
        assert got.dtype == torch.uint8 and got.shape == want.shape == (int(r["frames"]), 3, 32, 32), r["file"]
        mad = (got.int() - want.int()).abs().float().mean().item()
        assert mad <= 1.0, f"{r['file']}: mean absolute difference {mad:.2f} against torchcodec"


def test_torchcodec_decodes_every_frame_of_an_mpeg2_program_stream(fixtures_dir: Path) -> None:
    # this stream starts at 0.54 s: torchcodec's frame-index access skips its first 12 frames and its last one
    (row,) = [r for r in _fixture_videos(fixtures_dir) if r["container"] == "mpeg"]
    path = fixtures_dir / row["file"]
    clip = decode_clip(path, 32, decoder="torchcodec")
    assert clip.shape == (215, 1, 32, 32) == (int(row["frames"]), 1, 32, 32)
    seen: list[int] = []
    first = read_frames(path, _recording(seen, lambda n: (0,)), 32, decoder="torchcodec")
    assert seen == [215] and torch.equal(first[0], clip[0])
    pyav_first = decode_clip(path, 32, decoder="pyav")[0]
    assert (first[0].int() - pyav_first.int()).abs().float().mean() <= 1.0  # the same first frame


@pytest.mark.parametrize("backend", DECODERS)
def test_read_frames_gives_the_chosen_frames_in_order_in_every_backend(synthetic_clips: list[Path], backend: str):
    pytest.importorskip({"torchcodec": "torchcodec", "pyav": "av", "opencv": "cv2"}[backend])
    clip = decode_clip(synthetic_clips[0], 32, decoder=backend)
    lengths: list[int] = []
    got = read_frames(synthetic_clips[0], _recording(lengths, lambda n: (5, 0, 5, n - 1)), 32, decoder=backend)
    assert lengths == [24] and got.shape == (4, 1, 32, 32)
    assert torch.equal(got, clip[[5, 0, 5, 23]])
    as_bytes = read_frames(synthetic_clips[0].read_bytes(), lambda n: (3,), 32, decoder=backend)
    assert torch.equal(as_bytes[0], clip[3])


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
def test_frames_are_resized_one_at_a_time_never_held_at_full_size(tmp_path: Path, backend: str) -> None:
    pytest.importorskip("cv2" if backend == "opencv" else "av")
    big = make_clip(tmp_path / "big.mp4", size=512, frames=12, gop=4)
    full_rgb = 512 * 512 * 3
    tracemalloc.start()
    try:
        clip = decode_clip(big, 32, decoder=backend)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clip.shape == (12, 1, 32, 32)
    assert peak < 3 * full_rgb, f"peak {peak} bytes: more than two full-size frames were alive at once"


def test_auto_takes_the_first_backend_that_can_open_files_and_logs_it_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, synthetic_clips: list[Path]
) -> None:
    def broken() -> None:
        raise RuntimeError("Could not load libtorchcodec")

    monkeypatch.setattr(decode._BACKENDS["torchcodec"], "probe", broken)
    with caplog.at_level(logging.INFO, logger=decode.__name__):
        assert resolve_decoder("auto") == "pyav"
        read_frames(synthetic_clips[0], lambda n: (0,), 32)
        read_frames(synthetic_clips[1], lambda n: (0,), 32)
    named = [r.getMessage() for r in caplog.records if "video decoder" in r.getMessage()]
    assert len(named) == 1 and "pyav" in named[0] and "torchcodec" in named[0]  # which, and why not the first


def test_no_usable_decoder_is_one_line_error_naming_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise ImportError("no module")

    for name in DECODERS:
        monkeypatch.setattr(decode._BACKENDS[name], "probe", missing)
    with pytest.raises(DataError) as err:
        resolve_decoder("auto")
    message = str(err.value)
    assert "\n" not in message and all(p in message for p in ("torchcodec", "av", "opencv-python-headless"))


def test_an_explicit_backend_that_is_missing_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    with pytest.raises(DataError, match="decoder='opencv'.*pip install opencv-python-headless"):
        resolve_decoder("opencv")


def test_decoder_setting_is_checked_by_the_config() -> None:
    assert DataConfig().decoder == "auto"
    with pytest.raises(DataError, match="decoder='ffmpeg'.*auto, torchcodec, pyav, opencv"):
        DataConfig(decoder="ffmpeg")


@pytest.mark.parametrize("backend", DECODERS)
def test_files_that_are_not_videos_raise_decode_error_in_every_backend(tmp_path: Path, backend: str) -> None:
    pytest.importorskip({"torchcodec": "torchcodec", "pyav": "av", "opencv": "cv2"}[backend])
    (tmp_path / "text.mp4").write_text("not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ("text.mp4", "empty.mp4"):
        with pytest.raises(DecodeError, match=name):
            decode_clip(tmp_path / name, 32, decoder=backend)


def test_grayscale_is_the_luma_of_the_rgb_frames(synthetic_clips: list[Path]) -> None:
    rgb = decode_clip(synthetic_clips[0], 32, grayscale=False, decoder="pyav")
    gray = decode_clip(synthetic_clips[0], 32, decoder="pyav")
    assert gray.shape == (24, 1, 32, 32) and torch.equal(gray, decode.to_gray(rgb))
