"""Batched per-sample augmentation: independence, reproducibility, and agreement with torchvision ops."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

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


def test_colour_ops_match_torchvision_and_are_no_ops_on_gray() -> None:
    tvf = pytest.importorskip("torchvision.transforms.v2.functional")
    x = torch.rand(4, 3, 8, 8)
    f = torch.tensor([0.4, 0.9, 1.3, 1.6]).view(4, 1, 1, 1)
    hue = torch.tensor([-0.16, -0.05, 0.07, 0.16])
    for i in range(4):
        assert torch.allclose(
            A._contrast(x[i : i + 1], f[i]), tvf.adjust_contrast(x[i : i + 1], float(f[i])), atol=1e-5
        )
        assert torch.allclose(
            A._saturation(x[i : i + 1], f[i]), tvf.adjust_saturation(x[i : i + 1], float(f[i])), atol=1e-5
        )
        assert torch.allclose(
            A._hue(x[i : i + 1], hue[i : i + 1]), tvf.adjust_hue(x[i : i + 1], float(hue[i])), atol=1e-4
        )
    gray = _frames(8)
    one = A.augment(gray, CFG, torch.Generator().manual_seed(1))
    three = A.augment(gray.expand(8, 3, 32, 32), CFG, torch.Generator().manual_seed(1))
    # saturation and hue are no-ops on 3 equal channels (up to torchvision's gray weights summing to 0.9999)
    assert torch.allclose(one, three, atol=1e-3)


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
