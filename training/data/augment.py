"""Per-sample SimCLR augmentation of a whole batch in a few tensor ops (GPU when there is one, else CPU).

The reference transform (spec section 2.4) is ``Resize((S, S))`` -> ``RandomResizedCrop(S, scale=(s1, 1),
ratio=(0.8, 1.25))`` -> ``RandomHorizontalFlip()`` -> ``ColorJitter(0.8 s2, 0.8 s2, 0.8 s2, 0.2 s2)`` ->
``ToTensor`` -> ``Normalize``. Every sample draws its own parameters (torchvision v2 draws one set per call,
which would give a whole batch the same crop), all from one ``torch.Generator`` on the CPU, so a seed
reproduces a batch exactly on any device.

* Resize + crop + flip are one ``affine_grid`` + ``grid_sample`` (bilinear, border clamp): each output pixel
  samples the crop box with PIL's pixel-centre convention, and a flip is a negative x scale. Crop boxes are
  drawn exactly like torchvision's ``RandomResizedCrop.get_params`` (10 tries of area and log-ratio, integer
  box, centre-crop fallback), vectorized over the batch. Inputs that are not S x S (decoder resize off) are
  first resized with antialiasing.
* Colour jitter keeps torchvision's semantics: factors uniform in ``[max(0, 1-b), 1+b]`` (hue in
  ``[-h, h]``), the four ops in a random order per sample, each on the ``[0, 1]`` image and clamped.
  On grayscale input (one channel, see :mod:`.decode`) saturation and hue are exact no-ops on 3 identical
  channels and are skipped; only brightness, contrast and their order matter. RGB input gets all four.
* Differences from PIL: everything stays float (PIL rounds to uint8 after each op), contrast uses the
  exact float mean (PIL rounds it to an integer grey level), and the outermost output pixels of a crop
  interpolate with the real pixels just outside the box where PIL clamps to the box edge. All are below
  one grey level or half a pixel.

``bench_pipeline.py`` measures this against kornia's ``AugmentationSequential`` (see benchmarks/RESULTS.md);
this implementation is kept because it was faster and needs no extra dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "CropParams", "sample_crop_params", "augment"]


@dataclass(frozen=True)
class AugmentConfig:
    """The reference defaults: Meta-USCL (S=64, s1=0.7, s2=0.8, mean 0.18, std 0.24)."""

    size: int = 64
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    flip_p: float = 0.5
    jitter_strength: float = 0.8
    mean: float = 0.18
    std: float = 0.24


@dataclass(frozen=True)
class CropParams:
    """Integer crop boxes ``(top, left, height, width)`` and flip flags, one row per sample (CPU)."""

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor


def sample_crop_params(n: int, size: int, cfg: AugmentConfig, generator: torch.Generator | None) -> CropParams:
    """torchvision ``RandomResizedCrop.get_params`` for ``n`` samples of a ``size`` x ``size`` image at once."""
    area = float(size * size)
    lo, hi = cfg.crop_scale
    log_r = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    u = torch.rand(n, 10, 4, generator=generator, dtype=torch.float64)
    target = area * (lo + (hi - lo) * u[..., 0])
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = ok.to(torch.int8).argmax(dim=1)
    rows = torch.arange(n)
    w, h, u = w[rows, first], h[rows, first], u[rows, first]
    top = torch.floor(u[:, 2] * (size - h + 1))
    left = torch.floor(u[:, 3] * (size - w + 1))
    # no valid try: torchvision's central fallback (for a square image it is the whole image unless the
    # ratio range excludes 1, where the box is clamped to the nearest allowed ratio)
    any_ok = ok.any(dim=1)
    if not bool(any_ok.all()):
        fw, fh = float(size), float(size)
        if cfg.crop_ratio[0] > 1.0:
            fh = float(round(size / cfg.crop_ratio[0]))
        elif cfg.crop_ratio[1] < 1.0:
            fw = float(round(size * cfg.crop_ratio[1]))
        w = torch.where(any_ok, w, torch.tensor(fw, dtype=w.dtype))
        h = torch.where(any_ok, h, torch.tensor(fh, dtype=h.dtype))
        top = torch.where(any_ok, top, (size - h) // 2)
        left = torch.where(any_ok, left, (size - w) // 2)
    flip = torch.rand(n, generator=generator) < cfg.flip_p
    return CropParams(top, left, h, w, flip)


def _crop_flip(x: torch.Tensor, p: CropParams, size: int) -> torch.Tensor:
    """Resample each sample's crop box to ``size`` x ``size`` (flipped where asked) in one grid_sample."""
    n = x.shape[0]
    dev = x.device
    sx = (p.width / size) * torch.where(p.flip, -1.0, 1.0).to(torch.float64)
    tx = (2 * p.left + p.width) / size - 1
    sy = p.height / size
    ty = (2 * p.top + p.height) / size - 1
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    grid = F.affine_grid(theta.to(dev, x.dtype), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # torchvision weights


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f * x + (1 - f) * _gray(x)).clamp_(0, 1)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Shift hue by ``f`` (fraction of a turn) through HSV, as torchvision's tensor ``adjust_hue``."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + f.view(-1, 1, 1)) % 1.0
    v = maxc
    i = torch.floor(h * 6.0)
    fr = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * fr), v * (1 - s * (1 - fr))
    i = i.to(torch.int64) % 6
    sel = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (rr, gg, bb) in enumerate(sel):
        m = (i == k).unsqueeze(1)
        out = torch.where(m, torch.stack([rr, gg, bb], dim=1), out)
    return out


def _jitter(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    b = 0.8 * cfg.jitter_strength
    hue = 0.2 * cfg.jitter_strength
    if b <= 0 and hue <= 0:
        return x
    lo = max(0.0, 1.0 - b)
    u = torch.rand(n, 4, generator=generator)
    factors = lo + (1 + b - lo) * u[:, :3]
    hue_f = -hue + 2 * hue * u[:, 3]
    order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)  # torchvision: randperm(4) per call
    dev = x.device
    factors = factors.to(dev, x.dtype).view(n, 3, 1, 1, 1)
    hue_f = hue_f.to(dev, x.dtype)
    order = order.to(dev)
    ops = [lambda t, i: _brightness(t, factors[i, 0]), lambda t, i: _contrast(t, factors[i, 1])]
    if x.shape[1] == 3:
        ops += [lambda t, i: _saturation(t, factors[i, 2]), lambda t, i: _hue(t, hue_f[i])]
    # each op runs once per sample, on the samples that have it at this position (index groups, no waste)
    for pos in range(4):
        for k, op in enumerate(ops):
            idx = (order[:, pos] == k).nonzero().squeeze(1)
            if idx.numel():
                x = x.index_copy(0, idx, op(x.index_select(0, idx), idx))
    return x


def augment(frames: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` (C = 1 or 3, any device) -> float32 ``[B, 3, S, S]``, augmented and normalized.

    Each sample gets its own crop, flip and jitter; parameters come from ``generator`` (CPU) in a fixed
    order, so the same seed gives the same output on CPU and GPU (up to float rounding).
    """
    x = frames.float().div_(255.0)
    if x.shape[-2:] != (cfg.size, cfg.size):
        x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", antialias=True, align_corners=False)
    x = _crop_flip(x, sample_crop_params(x.shape[0], cfg.size, cfg, generator), cfg.size)
    x = _jitter(x.clamp_(0, 1), cfg, generator)
    x = (x - cfg.mean) / cfg.std
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x
