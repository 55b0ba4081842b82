"""Batched per-sample augmentation: independence, reproducibility, and agreement with torchvision ops."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hostsync import no_host_sync
from timm_uscl.training.data import augment as A

CFG = A.AugmentConfig(size=32)


def _frames(n: int = 16, c: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, c, 32, 32), generator=g, dtype=torch.uint8).expand(n, c, 32, 32).contiguous()


def test_each_sample_gets_its_own_params() -> None:
    out = A.augment(_frames(), CFG, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    flat = out.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(16) for j in range(i + 1, 16))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])  # grayscale -> 3 equal channels


def test_same_seed_same_batch() -> None:
    x = _frames()
    a = A.augment(x, CFG, torch.Generator().manual_seed(5))
    b = A.augment(x, CFG, torch.Generator().manual_seed(5))
    c = A.augment(x, CFG, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_crop_params_match_random_resized_crop_ranges() -> None:
    p = A.sample_crop_params(4000, 64, A.AugmentConfig(size=64), torch.Generator().manual_seed(0))
    area = p.height * p.width / 64**2
    ratio = p.width / p.height
    assert area.min() > 0.67 and area.max() <= 1.0 and ratio.min() > 0.77 and ratio.max() < 1.3
    assert (p.top + p.height <= 64).all() and (p.left + p.width <= 64).all() and p.top.min() >= 0
    assert 0.45 < p.flip.float().mean() < 0.55 and len(set(zip(p.top.tolist(), p.left.tolist()))) > 100


def test_crop_flip_equals_torchvision_resized_crop() -> None:
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    x = torch.rand(3, 1, 32, 32)
    p = A.CropParams(
        torch.tensor([0.0, 5, 3]),
        torch.tensor([0.0, 2, 9]),
        torch.tensor([32.0, 25, 23]),
        torch.tensor([32.0, 27, 21]),
        torch.tensor([False, False, True]),
    )
    ours = A._crop_flip(x, p, 32)
    for i in range(3):
        t, left, h, w = (int(v[i]) for v in (p.top, p.left, p.height, p.width))
        ref = tvf.resized_crop(x[i], t, left, h, w, [32, 32], antialias=False)
        ref = tvf.horizontal_flip(ref) if p.flip[i] else ref
        # interior identical; at the box edge we sample the real neighbours, torchvision/PIL clamp to the box
        assert torch.allclose(ours[i, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-5)
    assert torch.allclose(ours[0], x[0], atol=1e-6)


def _torchvision_jitter(x: torch.Tensor, cfg: A.AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter ops, one sample at a time, with the factors and order ``_jitter`` draws."""
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    b, hue = 0.8 * cfg.jitter_strength, 0.2 * cfg.jitter_strength
    lo = max(0.0, 1.0 - b)
    draws = torch.rand(len(x), 8, generator=generator, dtype=torch.float64)
    u, order = draws[:, :4].float(), torch.argsort(draws[:, 4:], dim=1)
    ops = [tvf.adjust_brightness, tvf.adjust_contrast, tvf.adjust_saturation, tvf.adjust_hue]
    out = []
    for i in range(len(x)):
        y = x[i]
        for k in order[i].tolist():
            if x.shape[1] == 1 and k >= 2:
                continue  # saturation and hue do nothing to a grey image
            f = float(-hue + 2 * hue * u[i, 3]) if k == 3 else float(lo + (1 + b - lo) * u[i, k])
            y = ops[k](y, f)
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("channels", [3, 1])
def test_jitter_applies_each_samples_own_ops_in_its_own_order_like_torchvision(channels: int) -> None:
    x = torch.rand(24, channels, 8, 8)
    ours = A._jitter(x.clone(), CFG, torch.rand(24, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    ref = _torchvision_jitter(x, CFG, torch.Generator().manual_seed(4))
    assert torch.allclose(ours, ref, atol=1e-4)


def test_saturation_and_hue_are_no_ops_on_gray() -> None:
    gray = _frames(8)
    one = A.augment(gray, CFG, torch.Generator().manual_seed(1))
    three = A.augment(gray.expand(8, 3, 32, 32), CFG, torch.Generator().manual_seed(1))
    # saturation and hue are no-ops on 3 equal channels (up to torchvision's gray weights summing to 0.9999)
    assert torch.allclose(one, three, atol=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_never_makes_the_host_wait_for_the_device(channels: int) -> None:
    # no nonzero / item / boolean-mask indexing: on a GPU the whole augmentation is a queue of launches
    x = _frames(16, channels)
    odd = A.AugmentConfig(size=32, crop_ratio=(1.5, 2.0))  # ratios that force the centre-crop fallback too
    with no_host_sync():
        A.augment(x, CFG, torch.Generator().manual_seed(0))
        A.augment(x, odd, torch.Generator().manual_seed(0))
        A.augment(x, CFG)


def test_draws_come_from_the_given_generator_and_leave_the_global_one_alone() -> None:
    state = torch.get_rng_state()
    a = A.augment(_frames(), CFG, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    b = A.augment(_frames(), CFG)  # no generator: the default generator of the data's device
    assert torch.equal(a, b) and not torch.equal(torch.get_rng_state(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_augment_on_the_gpu_draws_there_and_never_synchronises() -> None:
    x = _frames(64).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = A.augment(x, CFG, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    again = A.augment(x, CFG, torch.Generator(device="cuda").manual_seed(0))
    assert out.is_cuda and torch.equal(out, again)


def test_no_jitter_full_crop_is_identity_or_flip() -> None:
    cfg = replace(CFG, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_strength=0.0, mean=0.0, std=1.0)
    x = _frames(8)
    out = A.augment(x, cfg, torch.Generator().manual_seed(0))[:, :1]
    ref = x.float() / 255
    for i in range(8):
        assert torch.allclose(out[i], ref[i], atol=1e-5) or torch.allclose(out[i], ref[i].flip(-1), atol=1e-5)


def test_non_square_input_is_resized_first() -> None:
    out = A.augment(torch.randint(0, 256, (2, 1, 40, 50), dtype=torch.uint8), CFG, torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32)
