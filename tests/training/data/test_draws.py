"""Keyed draws: the same pair, weights and views for a video on the stream and on the frame store."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from timm_uscl.training.data import DataConfig, PairDataModule
from timm_uscl.training.data.draws import (
    PAIR_DRAWS,
    VIEW_DRAWS,
    item_id,
    item_ids,
    key_id,
    key_ids,
    meta_batch,
    pair_draws,
    view_draws,
)
from timm_uscl.training.data.pairs import TRAINING_PAIR_TYPES
from timm_uscl.training.data.store_module import StoreDataModule

_MASK = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """The textbook SplitMix64 finalizer on Python integers (the reference the tensor version must equal)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def test_keyed_uniforms_are_splitmix64_bit_for_bit() -> None:
    # integer arithmetic only: what makes the draws the same on every device
    ids = item_ids(key_ids(["a.mp4", "b/c.mp4"]), seed=3, purpose="train", draw=7)
    u = pair_draws(ids)
    for row, ident in enumerate(ids.tolist()):
        for slot in range(PAIR_DRAWS):
            z = _splitmix64((ident + (slot + 1) * 0x9E3779B97F4A7C15) & _MASK)
            assert u[row, slot].item() == (z >> 11) * 2.0**-53


def test_draws_are_uniform_and_differ_by_key_seed_epoch_and_purpose() -> None:
    keys = key_ids([f"v{i}.mp4" for i in range(4000)])
    u = view_draws(item_ids(keys, seed=0, purpose="train", draw=0), 2)
    assert u.shape == (4000, 2, VIEW_DRAWS) and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.005
    base = item_ids(keys[:50], seed=0, purpose="train", draw=0)
    for other in (
        item_ids(keys[:50], seed=1, purpose="train", draw=0),
        item_ids(keys[:50], seed=0, purpose="train", draw=1),
        item_ids(keys[:50], seed=0, purpose="meta", draw=0),
    ):
        assert not (other == base).any()
    assert item_id("v3.mp4", seed=0, purpose="train", draw=0) == base[3].item()
    assert key_id("v3.mp4") == keys[3].item()


def test_meta_batches_cover_the_split_once_per_pass() -> None:
    first_pass = torch.cat([meta_batch(10, 3, seed=0, rank=0, drawn=k) for k in range(3)])
    assert len(set(first_pass.tolist())) == 9  # three whole batches of a fresh permutation
    assert not torch.equal(meta_batch(10, 3, seed=0, rank=0, drawn=3), meta_batch(10, 3, seed=0, rank=0, drawn=0))
    assert torch.equal(meta_batch(10, 3, seed=0, rank=0, drawn=4), meta_batch(10, 3, seed=0, rank=0, drawn=4))


def _cfg(source: Path, pair_type: str) -> DataConfig:
    return DataConfig(
        source=str(source), image_size=32, batch_size=3, num_workers=0, drop_last=False, pair_type=pair_type,
        meta_fraction=0.3, meta_batch_size=2, seed=random.Random(pair_type).randrange(100),
    )  # fmt: skip


def _by_key(dm: object, epoch: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    out = {}
    for batch in dm.train_loader(epoch):  # type: ignore[attr-defined]
        x1, x2 = dm.gpu_views(batch, "cpu")  # type: ignore[attr-defined]
        for i, key in enumerate(batch.keys):
            out[key] = (batch.frames[i], batch.lam[i], x1[i], x2[i])
    return out


@pytest.mark.parametrize("pair_type", TRAINING_PAIR_TYPES)
def test_the_stream_and_the_store_give_every_video_the_same_pair_and_views(clip_folder: Path, pair_type: str) -> None:
    pytest.importorskip("torchcodec")
    cfg = _cfg(clip_folder, pair_type)
    stream, store = PairDataModule(cfg), StoreDataModule(cfg, device="cpu")
    for epoch in (0, 3):
        a, b = _by_key(stream, epoch), _by_key(store, epoch)
        assert sorted(a) == sorted(b) and len(a) == store.num_videos
        for key in a:
            (fa, la, a1, a2), (fb, lb, b1, b2) = a[key], b[key]
            assert torch.equal(fa, fb), key  # the same frames, mixed the same way
            assert torch.allclose(la, lb.cpu())
            assert torch.allclose(a1, b1, atol=1e-5) and torch.allclose(a2, b2, atol=1e-5)  # the same augmentation
    s_meta, t_meta = stream.meta_iterator(), store.meta_iterator()
    for _ in range(4):
        ms, mt = next(s_meta), next(t_meta)
        assert ms.keys == mt.keys and torch.equal(ms.frames, mt.frames)
        assert all(
            torch.allclose(x, y, atol=1e-5) for x, y in zip(stream.gpu_views(ms, "cpu"), store.gpu_views(mt, "cpu"))
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_store_on_a_gpu_gives_the_pairs_and_views_of_the_cpu(clip_folder: Path) -> None:
    cfg = _cfg(clip_folder, "metauscl")
    cpu, gpu = _by_key(StoreDataModule(cfg, device="cpu"), 1), _by_key(StoreDataModule(cfg, device="cuda"), 1)
    for key, (f, lam, x1, x2) in cpu.items():
        g = gpu[key]
        assert torch.equal(f, g[0].cpu()) and torch.allclose(lam, g[1].cpu())
        assert torch.allclose(x1, g[2].cpu(), atol=1e-4) and torch.allclose(x2, g[3].cpu(), atol=1e-4)


def test_under_ddp_each_ranks_meta_batch_gets_views_of_its_own(clip_folder: Path) -> None:
    pytest.importorskip("torchcodec")
    cfg = _cfg(clip_folder, "metauscl")
    ranks = [StoreDataModule(cfg, rank=r, world_size=2, device="cpu") for r in (0, 1)]
    batches = [next(dm.meta_iterator()) for dm in ranks]
    views = [dm.gpu_views(b, "cpu")[0] for dm, b in zip(ranks, batches)]
    shared = [key for key in batches[0].keys if key in batches[1].keys]
    for key in shared:  # the same meta video on both ranks: other augmentation
        assert not torch.allclose(views[0][batches[0].keys.index(key)], views[1][batches[1].keys.index(key)])
    assert not torch.equal(
        item_ids(key_ids(["a"]), seed=0, purpose="meta", draw=0, rank=0),
        item_ids(key_ids(["a"]), seed=0, purpose="meta", draw=0, rank=1),
    )


def test_a_mid_epoch_state_of_other_draws_or_the_other_path_restarts_the_epoch(clip_folder: Path) -> None:
    pytest.importorskip("torchcodec")
    cfg = _cfg(clip_folder, "simclr")
    store = StoreDataModule(cfg, device="cpu")
    it = iter(store.train_loader(0))
    next(it)
    state = store.state_dict()
    older = {k: v for k, v in state.items() if k != "draws"}  # saved before the draws were keyed
    for module, saved in ((StoreDataModule(cfg, device="cpu"), older), (PairDataModule(cfg), state)):
        module.load_state_dict(saved)
        assert len({k for b in module.train_loader(0) for k in b.keys}) == module.num_videos  # the whole epoch
