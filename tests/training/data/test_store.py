"""The frame store: device-side pair sampling, epochs without left-out videos, resume, the store file."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hostsync import no_host_sync
from timm_uscl.training.data import DataConfig, DataError
from timm_uscl.training.data.datamodule import DataModule, data_module
from timm_uscl.training.data.draws import PAIR_DRAWS
from timm_uscl.training.data.pairs import sample_pairs
from timm_uscl.training.data.sampling import beta_3_5, beta_half_half, mix_views
from timm_uscl.training.data.sources import meta_split_fn
from timm_uscl.training.data.store import FrameStore, build_store, load_store, save_store, store_settings
from timm_uscl.training.data.store_module import StoreDataModule, batch_sizes, placement

CPU = torch.device("cpu")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _u(n: int = 4000, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, PAIR_DRAWS, generator=_gen(seed), dtype=torch.float64)


def _lengths(n: int = 4000, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 40, (n,), generator=_gen(seed))


# ---------------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("max_dist", [2, 5, 999])
def test_metauscl_frames_keep_the_ppg_constraints(max_dist: int) -> None:
    lengths = _lengths()
    idx, w = sample_pairs("metauscl", lengths, _u(), max_dist=max_dist)
    long = lengths >= 3
    i0, f1, f2 = idx[long].unbind(1)
    d1, d2, L = f1 - i0, f2 - i0, lengths[long]
    assert (i0 >= 0).all() and (d1 >= 1).all() and (d1 < d2).all()
    assert (d2 <= torch.clamp(L - 1, max=max_dist)).all() and (f2 <= L - 1).all()
    assert (w[long] > 0).all() and (w[long] < 1).all()
    assert (idx[lengths == 2] == torch.tensor([0, 1, 1])).all() and (idx[lengths == 1] == 0).all()
    assert (w[~long] == torch.tensor([0.0, 1.0])).all()  # unmixed: x1 = F0, x2 = F1


def test_uscl_frames_are_three_distinct_frames_or_the_short_clip_fallbacks() -> None:
    lengths = _lengths()
    idx, lam = sample_pairs("uscl", lengths, _u(seed=1))
    long = lengths >= 3
    a, b, c = idx[long].unbind(1)
    assert (a != b).all() and (b != c).all() and (a != c).all() and (idx[long] < lengths[long, None]).all()
    two = idx[lengths == 2]
    assert (two[:, 0] == two[:, 1]).all() and (two[:, 0] + two[:, 2] == 1).all() and len(set(two[:, 0].tolist())) == 2
    assert (idx[lengths == 1] == 0).all() and (lam[~long] == 1).all()
    # Beta(0.5, 0.5) in float32: a draw within ~2e-4 of the ends rounds to exactly 0 or 1 (sin^2 near pi/2)
    assert ((lam[long] >= 0) & (lam[long] <= 1)).all() and ((lam[long] > 0) & (lam[long] < 1)).float().mean() > 0.99


def test_simclr_takes_any_frame_and_meta_the_first() -> None:
    lengths = _lengths()
    idx, _ = sample_pairs("simclr", lengths, _u(seed=2))
    assert (idx[:, 0] < lengths).all() and (idx >= 0).all()
    assert Counter(idx[lengths == 3, 0].tolist()).keys() == {0, 1, 2}
    assert (sample_pairs("meta", lengths, _u())[0] == 0).all()


def test_mixing_weights_have_the_reference_beta_distributions() -> None:
    a = beta_3_5(torch.rand(200_000, 7, generator=_gen(4))).double()
    assert abs(a.mean() - 0.375) < 0.003 and abs(a.var() - 15 / (64 * 9)) < 0.001  # Beta(3, 5)
    ref = np.random.default_rng(0).beta(3, 5, 200_000)
    assert np.abs(np.quantile(a.numpy(), [0.1, 0.5, 0.9]) - np.quantile(ref, [0.1, 0.5, 0.9])).max() < 0.005
    lam = beta_half_half(torch.rand(200_000, generator=_gen(5))).double()
    assert abs(lam.mean() - 0.5) < 0.003 and abs(lam.var() - 0.125) < 0.002  # Beta(0.5, 0.5)
    assert abs((lam < 0.1).double().mean() - 2 / np.pi * np.arcsin(np.sqrt(0.1))) < 0.004


def test_ppg_views_are_mixed_in_pixels_and_rounded() -> None:
    frames = torch.tensor([10, 20, 40], dtype=torch.uint8).view(1, 3, 1, 1, 1).expand(1, 3, 1, 2, 2)
    views = mix_views(frames, torch.tensor([[0.25, 0.5]]), "metauscl")
    assert views.dtype == torch.uint8 and views[0, :, 0, 0, 0].tolist() == [12, 30]  # 12.5 -> 12 (even), 30


# ---------------------------------------------------------------------------------------------------- the store


def _cfg(source: Path | str, **kw) -> DataConfig:
    base = dict(source=str(source), image_size=32, batch_size=3, num_workers=1, store="device", meta_batch_size=2)
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def store(clip_folder: Path) -> FrameStore:
    return build_store(_cfg(clip_folder))


def _module(frames: FrameStore, clip_folder: Path, **kw) -> StoreDataModule:
    return StoreDataModule(_cfg(clip_folder, **kw), device=CPU, store=frames)


def test_store_holds_every_frame_of_every_clip_once(store: FrameStore, clip_folder: Path) -> None:
    assert store.num_videos == 10
    assert all(store.lengths[store.keys.index(f"video{k:02d}.mp4")] == 12 + k % 5 for k in range(10))
    assert store.frames.shape == (sum(store.lengths), 1, 32, 32) and store.frames.dtype == torch.uint8
    n_train = store.meta.count(False)
    assert store.meta == [False] * n_train + [True] * (10 - n_train) and 0 < n_train < 10  # training, then meta
    assert not store.skipped


@pytest.mark.parametrize("batch_size", [2, 3, 4, 8])
def test_every_training_video_gives_exactly_one_pair_per_epoch(
    store: FrameStore, clip_folder: Path, batch_size: int
) -> None:
    dm = _module(store, clip_folder, batch_size=batch_size)
    train = {k for k, m in zip(store.keys, store.meta) if not m}
    for epoch in range(3):
        loader = dm.train_loader(epoch)
        batches = list(loader)
        keys = [k for b in batches for k in b.keys]
        assert sorted(keys) == sorted(train) and len(batches) == len(loader)
        assert [len(b) for b in batches] == batch_sizes(len(train), batch_size)
        assert all(len(b) >= 2 for b in batches)  # never a lone pair: NT-Xent needs negatives


def test_a_remainder_of_one_joins_the_batch_before() -> None:
    assert batch_sizes(7, 3) == [3, 4] and batch_sizes(8, 3) == [3, 3, 2] and batch_sizes(4, 3) == [4]
    assert batch_sizes(5, 2) == [2, 3] and batch_sizes(6, 2) == [2, 2, 2] and batch_sizes(2, 32) == [2]


@pytest.mark.parametrize("pair_type,k", [("metauscl", 2), ("uscl", 3), ("simclr", 1)])
def test_batches_ship_the_pair_types_views_and_give_two_augmented_views(
    store: FrameStore, clip_folder: Path, pair_type: str, k: int
) -> None:
    dm = _module(store, clip_folder, pair_type=pair_type)
    batch = next(iter(dm.train_loader(0)))
    assert batch.frames.shape == (3, k, 1, 32, 32) and batch.frames.dtype == torch.uint8
    assert len(batch.sources) == 3 and set(batch.sources) == {clip_folder.name}
    x1, x2 = dm.gpu_views(batch, CPU)
    assert x1.shape == x2.shape == (3, 3, 32, 32) and torch.isfinite(x1).all() and torch.isfinite(x2).all()
    assert not torch.allclose(x1, x2)  # two different views of each pair
    flat = x1.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(3) for j in range(i + 1, 3))  # per sample


def test_same_seed_same_batches_other_epoch_other_order(store: FrameStore, clip_folder: Path) -> None:
    def run(seed: int, epoch: int) -> tuple[list[str], list[torch.Tensor]]:
        dm = _module(store, clip_folder, seed=seed)
        batches = list(dm.train_loader(epoch))
        return [k for b in batches for k in b.keys], [torch.cat(dm.gpu_views(b, CPU)) for b in batches]

    keys, views = run(0, 0)
    again_keys, again_views = run(0, 0)
    assert keys == again_keys and all(torch.equal(a, b) for a, b in zip(views, again_views))
    other_keys, other_views = run(0, 1)
    assert other_keys != keys and sorted(other_keys) == sorted(keys)
    assert run(1, 0)[0] != keys


def test_meta_batches_are_first_frames_of_held_out_videos_only(store: FrameStore, clip_folder: Path) -> None:
    dm = _module(store, clip_folder)
    train = {k for b in dm.train_loader(0) for k in b.keys}
    meta = {k for k, m in zip(store.keys, store.meta) if m}
    assert dm.num_videos == len(train) and dm.num_meta_videos == len(meta) and train.isdisjoint(meta)
    it = dm.meta_iterator()
    for _ in range(5):
        batch = next(it)
        assert len(batch) == min(2, len(meta)) and set(batch.keys) <= meta
        for key, frame in zip(batch.keys, batch.frames[:, 0]):
            v = store.keys.index(key)
            assert torch.equal(frame, store.frames[store.offsets[v]])  # the first frame of that clip
    m1, m2 = dm.gpu_views(batch, CPU)
    assert m1.shape == (len(batch), 3, 32, 32) and not torch.allclose(m1, m2)


def test_resume_mid_epoch_gives_the_batches_of_the_uninterrupted_run(store: FrameStore, clip_folder: Path) -> None:
    def views(dm: StoreDataModule, batches: list) -> list[torch.Tensor]:
        return [torch.cat(dm.gpu_views(b, CPU)) for b in batches]

    full = _module(store, clip_folder, batch_size=2)
    whole = list(full.train_loader(4))
    meta_it = full.meta_iterator()
    whole_meta = [next(meta_it) for _ in range(3)]
    cut = _module(store, clip_folder, batch_size=2)
    it, meta_cut = iter(cut.train_loader(4)), cut.meta_iterator()
    head = [next(it), next(it)]
    next(meta_cut)
    state = cut.state_dict()
    resumed = _module(store, clip_folder, batch_size=2)
    resumed.load_state_dict(state)
    rest = list(resumed.train_loader(4))
    rest_meta = [next(resumed.meta_iterator()) for _ in range(2)]
    assert [b.keys for b in head + rest] == [b.keys for b in whole]
    assert all(torch.equal(a, b) for a, b in zip(views(full, whole), views(resumed, head + rest)))
    assert [b.keys for b in rest_meta] == [b.keys for b in whole_meta[1:]]
    assert resumed.state_dict()["complete"] and list(resumed.train_loader(5))  # the next epoch starts whole


def test_two_ranks_split_the_epoch_and_take_the_same_number_of_steps(store: FrameStore, clip_folder: Path) -> None:
    cfg = _cfg(clip_folder, batch_size=2)
    ranks = [StoreDataModule(cfg, rank=r, world_size=2, device=CPU, store=store) for r in range(2)]
    per_rank = [[k for b in dm.train_loader(0) for k in b.keys] for dm in ranks]
    train = {k for k, m in zip(store.keys, store.meta) if not m}
    assert len(per_rank[0]) == len(per_rank[1]) == -(-len(train) // 2)
    assert set(per_rank[0]) | set(per_rank[1]) == train
    assert len(per_rank[0]) + len(per_rank[1]) - len(train) == len(train) % 2  # only the padding repeats


def test_sampling_and_views_never_make_the_host_wait(store: FrameStore, clip_folder: Path) -> None:
    for pair_type in ("metauscl", "uscl", "simclr"):
        dm = _module(store, clip_folder, pair_type=pair_type)
        meta = dm.meta_iterator()
        next(meta)  # the one-off gather of the meta frames
        with no_host_sync():
            for batch in dm.train_loader(0):
                dm.gpu_views(batch, CPU)
            dm.gpu_views(next(meta), CPU)


def test_host_store_gives_the_same_batches_as_the_device_store(store: FrameStore, clip_folder: Path) -> None:
    dev, host = (_module(store, clip_folder, store=mode) for mode in ("device", "host"))
    for a, b in zip(dev.train_loader(0), host.train_loader(0)):
        assert a.keys == b.keys and torch.equal(a.frames, b.frames)


def test_bad_videos_are_skipped_and_counted(tmp_path: Path, synthetic_clips: list[Path]) -> None:
    for clip in synthetic_clips:
        shutil.copy(clip, tmp_path / clip.name)
    (tmp_path / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.mkv").write_bytes(b"")
    dm = StoreDataModule(_cfg(tmp_path, meta_fraction=0.0, batch_size=2), device=CPU)
    assert set(dm.stats.skipped) == {"random.mp4", "empty.mkv"} and dm.stats.decoded == 3
    assert sorted(k for b in dm.train_loader(0) for k in b.keys) == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    (tmp_path / "clip0.mp4").unlink()
    (tmp_path / "clip1.mp4").unlink()
    with pytest.raises(DataError, match="1 training video.*at least 2"):
        StoreDataModule(_cfg(tmp_path, meta_fraction=0.0), device=CPU)


def test_store_reads_parquet_shards_like_the_stream(synthetic_clips: list[Path], tmp_path: Path) -> None:
    from timm_uscl.training.data.publish import build_shards

    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in synthetic_clips:
        shutil.copy(clip, folder / clip.name)
    build_shards(folder, tmp_path / "out", max_videos_per_shard=1)
    cfg = _cfg(tmp_path / "out" / "data" / "*.parquet", meta_fraction=0.0, batch_size=2)
    dm = StoreDataModule(cfg, device=CPU)
    assert sorted(dm.store.keys) == ["clip0.mp4", "clip1.mp4", "clip2.mp4"] and dm.store.lengths == [24] * 3
    direct = build_store(_cfg(folder, meta_fraction=0.0))
    order = [direct.keys.index(k) for k in dm.store.keys]
    assert torch.equal(
        dm.store.frames, torch.cat([direct.frames[direct.offsets[i] : direct.offsets[i] + 24] for i in order])
    )


def test_store_takes_a_hub_repo_and_its_grouped_meta_split_like_the_stream(hub_video_repo: str) -> None:
    from timm_uscl.training.data import PairDataModule

    cfg = _cfg("org/lus-videos", meta_fraction=0.3, meta_group_by="patient", batch_size=2, num_workers=0)
    store, stream = StoreDataModule(cfg, device=CPU), PairDataModule(cfg)
    assert sorted(k for b in store.train_loader(0) for k in b.keys) == sorted(r["key"] for r in stream._train.dataset)
    assert {k for k, m in zip(store.store.keys, store.store.meta) if m} == {r["key"] for r in stream._meta.dataset}


def test_an_empty_meta_split_is_refused_only_when_the_meta_step_needs_it(synthetic_clips: list[Path]) -> None:
    keys = [p.name for p in synthetic_clips]
    seed = next(s for s in range(100) if not any(meta_split_fn(0.2, s)({"key": k}) for k in keys))
    cfg = _cfg(synthetic_clips[0].parent, seed=seed, batch_size=2)
    with pytest.raises(DataError, match="no held-out meta video among the 3 decoded.*train without the meta step"):
        StoreDataModule(cfg, device=CPU)
    dm = StoreDataModule(cfg, device=CPU, need_meta=False)
    assert dm.num_videos == 3 and dm.num_meta_videos == 0


def test_nothing_decodes_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="no video decoded.*a.mp4"):
        StoreDataModule(_cfg(tmp_path, meta_fraction=0.0), device=CPU)


def test_a_store_over_its_limit_stops_early_with_both_sizes(clip_folder: Path) -> None:
    with pytest.raises(DataError, match=r"pass 0\.\d MiB after \d+ clips, over the store's limit of 0\.0 MiB"):
        build_store(_cfg(clip_folder), limit_bytes=20_000)


def test_a_gpu_store_over_its_budget_goes_to_pinned_host_memory(caplog: pytest.LogCaptureFixture) -> None:
    gpu = torch.device("cuda", 0)
    assert placement("device", 100 << 20, 200.0, gpu) == "device" and placement("host", 1 << 20, 200.0, gpu) == "host"
    assert placement("device", 300 << 20, 200.0, gpu) == "host"
    assert "frame store of 300 MiB is over store_budget_mb=200.0: kept in pinned host memory" in caplog.text
    assert placement("device", 300 << 20, 200.0, CPU) == "device"  # on a CPU the host is the device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_the_gpu_a_whole_epoch_is_sampled_and_augmented_without_a_host_sync(
    store: FrameStore, clip_folder: Path
) -> None:
    gpu = torch.device("cuda")
    for mode in ("device", "host"):
        dm = StoreDataModule(_cfg(clip_folder, store=mode), device=gpu, store=store)
        list(dm.train_loader(0))  # warm-up
        meta = dm.meta_iterator()
        next(meta)  # the one-off gather of the meta frames
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if mode == "device" else "default")
        try:
            views = [dm.gpu_views(b, gpu) for b in dm.train_loader(1)]
            views.append(dm.gpu_views(next(meta), gpu))  # meta batches too (every Meta-USCL step takes one)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert all(x1.is_cuda and x1.shape[1:] == (3, 32, 32) for x1, _ in views)


def test_both_data_modules_offer_everything_the_engine_may_call(clip_folder: Path) -> None:
    members = {name for name in vars(DataModule) if not name.startswith("_")} | set(DataModule.__annotations__)
    assert {"train_loader", "meta_iterator", "gpu_views", "state_dict", "num_videos", "stats"} <= members
    for store in ("off", "device"):
        dm = data_module(_cfg(clip_folder, store=store), device="cpu")
        assert [name for name in sorted(members) if not hasattr(dm, name)] == [], store


def test_on_cpu_auto_takes_the_frame_store_when_the_frames_fit_and_says_so(
    clip_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from timm_uscl.training.data import PairDataModule

    with caplog.at_level("INFO"):
        assert isinstance(data_module(_cfg(clip_folder, store="auto"), device="cpu"), StoreDataModule)
    assert "data: frame store in RAM (store=auto: the decoded frames fit store_budget_mb)" in caplog.text
    assert isinstance(data_module(_cfg(clip_folder, store="off"), device="cpu"), PairDataModule)
    assert isinstance(data_module(_cfg(clip_folder, store="device"), device="cpu"), StoreDataModule)
    with pytest.raises(DataError, match="store='gpu': choose one of auto, device, host, off"):
        data_module(_cfg(clip_folder, store="gpu"), device="cpu")


def test_on_cpu_auto_streams_a_corpus_over_the_budget_and_says_why_in_one_line(
    clip_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from timm_uscl.training.data import PairDataModule

    tiny = _cfg(clip_folder, store="auto", store_budget_mb=0.01)
    with caplog.at_level("INFO"):
        assert isinstance(data_module(tiny, device="cpu"), PairDataModule)
    lines = [r.getMessage() for r in caplog.records if "the frame store does not fit" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "over the store's limit of" in lines[0]
    with pytest.raises(DataError, match="over the store's limit"):  # asked for explicitly: refused, not streamed
        data_module(dataclasses.replace(tiny, store="device"), device="cpu")


# ---------------------------------------------------------------------------------------------------- the file


@pytest.mark.parametrize("codec", ["raw", "xz"])
def test_store_file_round_trip_is_bit_exact(store: FrameStore, clip_folder: Path, tmp_path: Path, codec: str) -> None:
    path = save_store(store, tmp_path / "s.frames", codec=codec)
    back = load_store(path, store_settings(_cfg(clip_folder)))
    assert torch.equal(back.frames, store.frames) and back.lengths == store.lengths and back.keys == store.keys
    assert back.sources == store.sources and back.meta == store.meta and back.offsets == store.offsets
    with pytest.raises(DataError, match="already exists.*never overwritten"):
        save_store(store, path)


def test_trainer_decodes_once_into_store_file_then_reads_it(clip_folder: Path, tmp_path: Path) -> None:
    cfg = _cfg(clip_folder, store_file=str(tmp_path / "cache.frames"))
    first = StoreDataModule(cfg, device=CPU)
    assert (tmp_path / "cache.frames").is_file()
    # the file alone is enough: the videos are not read again (here they are not even there)
    moved = tmp_path / "moved" / clip_folder.name  # the same data by name, at a path that holds no video
    again = StoreDataModule(dataclasses.replace(cfg, source=str(moved)), device=CPU)
    assert torch.equal(again.store.frames, first.store.frames)
    assert [b.keys for b in again.train_loader(0)] == [b.keys for b in first.train_loader(0)]
    other_seed = StoreDataModule(dataclasses.replace(cfg, seed=5), device=CPU, need_meta=False)  # split by key
    is_meta = meta_split_fn(0.2, 5)
    assert other_seed.store.meta == [is_meta({"key": k}) for k in other_seed.store.keys] != first.store.meta


def test_store_file_with_other_settings_or_damage_is_refused(
    store: FrameStore, clip_folder: Path, tmp_path: Path
) -> None:
    path = save_store(store, tmp_path / "s.frames")
    with pytest.raises(
        DataError, match=r"s.frames: frame store decoded with other settings: image_size=32 \(run: 64\)"
    ):
        load_store(path, store_settings(_cfg(clip_folder, image_size=64)))
    cut = tmp_path / "cut.frames"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="cut.frames: truncated or damaged frame store"):
        load_store(cut)
    (tmp_path / "text.frames").write_text("hello")
    with pytest.raises(DataError, match="text.frames: not a timm-uscl frame store"):
        load_store(tmp_path / "text.frames")
    with pytest.raises(DataError, match="nope.frames: cannot read the frame store"):
        load_store(tmp_path / "nope.frames")


def test_a_store_file_of_other_data_is_refused_but_the_same_data_named_another_way_is_not(
    store: FrameStore, clip_folder: Path, tmp_path: Path
) -> None:
    path = save_store(store, tmp_path / "s.frames")
    with pytest.raises(DataError, match="frame store decoded with other settings: data"):
        load_store(path, store_settings(_cfg(tmp_path / "other_videos")))
    renamed = tmp_path / "bundle" / clip_folder.name  # a bundle names the data, not the machine's path
    assert load_store(path, store_settings(_cfg(str(renamed)))).num_videos == store.num_videos


@pytest.mark.parametrize("change", ["a clip deleted", "a clip's bytes changed"])
def test_a_store_file_of_another_folder_of_the_same_name_is_refused_by_its_clips(
    store: FrameStore, clip_folder: Path, tmp_path: Path, change: str
) -> None:
    """N5: ``A/videos`` and ``B/videos`` are both ``videos``: the run trained on A's frames while naming B."""
    path = save_store(store, tmp_path / "s.frames")
    same = Path(shutil.copytree(clip_folder, tmp_path / "same" / clip_folder.name))
    assert load_store(path, store_settings(_cfg(same))).num_videos == store.num_videos  # identical copy: fine
    other = Path(shutil.copytree(clip_folder, tmp_path / "B" / clip_folder.name))
    victim = sorted(other.glob("*.mp4"))[0]
    if change == "a clip deleted":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(DataError, match=r"s.frames: frame store decoded with other settings: other clips of") as info:
        load_store(path, store_settings(_cfg(other)))
    assert "\n" not in str(info.value)


def test_a_store_write_killed_by_sigkill_leaves_no_temporary_file_after_the_next_write(
    store: FrameStore, tmp_path: Path
) -> None:
    """N8: ``.<store_file>.*.tmp`` of a killed writer stayed forever (checkpoints and the frame cache clean theirs)."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f".s.frames.{int(dead.stdout)}.k1ll3d.tmp"
    orphan.write_bytes(b"half a store")
    live = tmp_path / ".s.frames.1.w0rk1n.tmp"  # pid 1 is alive: a write in progress elsewhere is left alone
    live.write_bytes(b"in progress")
    save_store(store, tmp_path / "s.frames")
    assert not orphan.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "s.frames"]


def test_a_meta_split_of_one_video_is_refused_when_the_meta_step_needs_it(clip_folder: Path) -> None:
    keys = sorted(p.name for p in clip_folder.glob("*.mp4"))
    seed = next(s for s in range(200) if sum(meta_split_fn(0.2, s)({"key": k}) for k in keys) == 1)
    cfg = _cfg(clip_folder, seed=seed, batch_size=2)
    with pytest.raises(DataError, match="holds 1 decodable video .*at least 2"):
        StoreDataModule(cfg, device=CPU)
    assert StoreDataModule(cfg, device=CPU, need_meta=False).num_meta_videos == 1
