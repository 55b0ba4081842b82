"""Per-sample SimCLR augmentation of a whole batch in a few tensor ops (GPU when there is one, else CPU).

The reference transform (spec section 2.4) is ``Resize((S, S))`` -> ``RandomResizedCrop(S, scale=(s1, 1),
ratio=(0.8, 1.25))`` -> ``RandomHorizontalFlip()`` -> ``ColorJitter(0.8 s2, 0.8 s2, 0.8 s2, 0.2 s2)`` ->
``ToTensor`` -> ``Normalize``. Every sample draws its own parameters (torchvision v2 draws one set per call,
which would give a whole batch the same crop) from ``VIEW_DRAWS`` uniforms of its own: the trainer passes each
item's keyed uniforms (:func:`.draws.view_draws`), so an image gets the same crop, flip and jitter on either data
path and on any device; without them the uniforms come from a ``torch.Generator`` (drawn on its device, the
data's device when none is given). Nothing is drawn on the host per step and nothing waits for the GPU: the whole
augmentation is a queue of kernel launches that never synchronises (no ``nonzero``, ``item`` or data-dependent
``if``; ``tests/training/data/test_augment.py`` checks this op by op).

* Resize + crop + flip are one ``affine_grid`` + ``grid_sample`` (bilinear, border clamp): each output pixel
  samples the crop box with PIL's pixel-centre convention, and a flip is a negative x scale. Crop boxes are
  drawn exactly like torchvision's ``RandomResizedCrop.get_params`` (10 tries of area and log-ratio, integer
  box, centre-crop fallback), vectorized over the batch. Inputs that are not S x S (decoder resize off) are
  first resized with antialiasing.
* Colour jitter keeps torchvision's semantics: factors uniform in ``[max(0, 1-b), 1+b]`` (hue in
  ``[-h, h]``), the four ops in a random order per sample, each on the ``[0, 1]`` image and clamped.
  On grayscale input (one channel, see :mod:`.decode`) saturation and hue are exact no-ops on 3 identical
  channels and are skipped; only brightness, contrast and their order matter. RGB input gets all four.
  Brightness, contrast and saturation are all ``f x + (1 - f) m`` (``m`` = 0, the mean grey level, the grey
  image), so each of the four positions applies every sample's own op in one fused pass, with no regrouping
  of samples by op (which would need the host to know the group sizes); for RGB each sample's order is
  shifted so that its hue falls on one common slot, where hue runs once for the whole batch.
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

from .draws import VIEW_DRAWS

__all__ = [
    "AugmentConfig",
    "CropParams",
    "sample_crop_params",
    "crop_params",
    "augment",
    "augmented_images",
    "pair_views",
]


@dataclass(frozen=True)
class AugmentConfig:
    """The reference defaults: Meta-USCL (S=64, s1=0.7, s2=0.8, mean 0.18, std 0.24). The one statement of these
    defaults: :class:`~.config.DataConfig` takes its own from here, and builds the run's from its settings."""

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


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """U[0, 1) drawn on the generator's device (or ``device`` when there is no generator)."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where, dtype=dtype)


def sample_crop_params(
    n: int,
    size: int,
    cfg: AugmentConfig,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
) -> CropParams:
    """torchvision ``RandomResizedCrop.get_params`` for ``n`` samples of a ``size`` x ``size`` image at once, drawn
    on the generator's device (``device`` without a generator)."""
    return crop_params(_uniform((n, VIEW_DRAWS), generator, device, torch.float64), size, cfg)


def crop_params(draws: torch.Tensor, size: int, cfg: AugmentConfig) -> CropParams:
    """Crop boxes and flips from each sample's uniforms (float64 ``[n, VIEW_DRAWS]``: 10 tries x 4, then the flip),
    returned on their device without a host synchronisation: the centre-crop fallback is selected per sample
    with ``torch.where``."""
    n = draws.shape[0]
    area = float(size * size)
    lo, hi = cfg.crop_scale
    log_r = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    u = draws[:, :40].reshape(n, 10, 4)
    target = area * (lo + (hi - lo) * u[..., 0])
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # the first valid try (0 when there is none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    u = u.gather(1, first[..., None].expand(n, 1, 4)).squeeze(1)
    top = torch.floor(u[:, 2] * (size - h + 1))
    left = torch.floor(u[:, 3] * (size - w + 1))
    # no valid try: torchvision's central fallback (for a square image it is the whole image unless the
    # ratio range excludes 1, where the box is clamped to the nearest allowed ratio)
    fw, fh = float(size), float(size)
    if cfg.crop_ratio[0] > 1.0:
        fh = float(round(size / cfg.crop_ratio[0]))
    elif cfg.crop_ratio[1] < 1.0:
        fw = float(round(size * cfg.crop_ratio[1]))
    any_ok = ok.any(dim=1)
    w = torch.where(any_ok, w, fw)
    h = torch.where(any_ok, h, fh)
    top = torch.where(any_ok, top, (size - h) // 2)
    left = torch.where(any_ok, left, (size - w) // 2)
    flip = draws[:, 40] < cfg.flip_p
    return CropParams(top, left, h, w, flip)


def _crop_flip(x: torch.Tensor, p: CropParams, size: int) -> torch.Tensor:
    """Resample each sample's crop box to ``size`` x ``size`` (flipped where asked) in one grid_sample."""
    n = x.shape[0]
    sx = (p.width / size) * torch.where(p.flip, -1.0, 1.0).to(torch.float64)
    tx = (2 * p.left + p.width) / size - 1
    sy = p.height / size
    ty = (2 * p.top + p.height) / size - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([sx, zero, tx, zero, sy, ty], dim=1).view(n, 2, 3)
    theta = theta.to(x.device, x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # torchvision weights


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


def _blend(x: torch.Tensor, op: torch.Tensor, factors: torch.Tensor, rgb: bool) -> torch.Tensor:
    """Each sample's op ``op`` (0 brightness, 1 contrast, 2 saturation, anything else: none) as ``f x + (1-f) m``."""
    shape = (x.shape[0], 1, 1, 1)
    f = factors.gather(1, op.clamp(0, 2)[:, None]).squeeze(1)
    f = torch.where((op >= 0) & (op < (3 if rgb else 2)), f, 1.0).view(shape)  # gray: saturation is a no-op
    g = _gray(x)
    m = torch.where((op == 1).view(shape), g.mean(dim=(1, 2, 3), keepdim=True), 0.0)
    if rgb:
        m = torch.where((op == 2).view(shape), g, m)
    return (f * x + (1 - f) * m).clamp_(0, 1)


def _jitter(x: torch.Tensor, cfg: AugmentConfig, draws: torch.Tensor) -> torch.Tensor:
    """torchvision ``ColorJitter`` per sample: four ops (brightness 0, contrast 1, saturation 2, hue 3) in each
    sample's own random order, applied position by position to the whole batch (no regrouping by op). ``draws``
    ``[n, 8]``: four factor uniforms, then four whose ranks are the order.

    RGB: each sample's order is shifted so that its hue lands on slot 3 of 7 (slots before and after hold its
    other ops, or nothing), so the costly hue runs once for the batch instead of once per position.
    """
    b = 0.8 * cfg.jitter_strength
    hue = 0.2 * cfg.jitter_strength
    if b <= 0 and hue <= 0:
        return x
    lo = max(0.0, 1.0 - b)
    u = draws[:, :4].float()
    order = torch.argsort(draws[:, 4:8], dim=1)  # randperm(4) per sample
    dev = x.device
    factors = (lo + (1 + b - lo) * u[:, :3]).to(dev, x.dtype, non_blocking=True)
    hue_f = (-hue + 2 * hue * u[:, 3]).to(dev, x.dtype, non_blocking=True)
    order = order.to(dev, non_blocking=True)
    if x.shape[1] != 3:
        for pos in range(4):
            x = _blend(x, order[:, pos], factors, rgb=False)
        return x
    k = (order == 3).to(torch.int8).argmax(dim=1, keepdim=True)  # the position of each sample's hue
    src = torch.arange(7, device=dev) - 3 + k  # slot s holds the op at position s - 3 + k
    slots = torch.where((src >= 0) & (src <= 3), order.gather(1, src.clamp(0, 3)), -1)
    for slot in range(7):
        x = _hue(x, hue_f) if slot == 3 else _blend(x, slots[:, slot], factors, rgb=True)
    return x


def augment(
    frames: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    *,
    draws: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` (C = 1 or 3, any device) -> float32 ``[B, 3, S, S]``, augmented and normalized.

    Each sample gets its own crop, flip and jitter from its row of ``draws`` (float64 ``[B, VIEW_DRAWS]`` on
    ``frames``' device); without them the uniforms come from ``generator``, drawn on its device (the default
    generator of ``frames``' device when None). The same uniforms give the same output. Nothing synchronises
    with the device.
    """
    x = frames.float().div_(255.0)
    if x.shape[-2:] != (cfg.size, cfg.size):
        x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", antialias=True, align_corners=False)
    if draws is None:
        draws = _uniform((x.shape[0], VIEW_DRAWS), generator, x.device, torch.float64)
    draws = draws.to(x.device, non_blocking=True)
    x = _crop_flip(x, crop_params(draws, cfg.size, cfg), cfg.size)
    x = _jitter(x.clamp_(0, 1), cfg, draws[:, 41:49])
    x = (x - cfg.mean) / cfg.std
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def augmented_images(views: int) -> int:
    """How many images an item of ``views`` shipped uint8 images augments: one frame is augmented twice."""
    return max(views, 2)


def pair_views(
    frames: torch.Tensor,
    lam: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
    *,
    draws: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's two views from its uint8 items ``[B, K, C, S, S]`` (on the training device): each image augmented
    on its own, then, for USCL's three frames (K = 3), mixed with ``lam`` ``[B]`` around the shared middle frame
    (``x1 = lam Fa + (1-lam) Fb``, ``x2 = lam Fc + (1-lam) Fb``); one frame (K = 1) is augmented twice. ``draws``
    (float64 ``[B, augmented_images(K), VIEW_DRAWS]``, :func:`.draws.view_draws`) are each item's uniforms;
    without them they come from ``generator``."""
    b, k = frames.shape[:2]
    stacked = frames[:, 0].repeat(2, 1, 1, 1) if k == 1 else frames.transpose(0, 1).reshape(b * k, *frames.shape[2:])
    flat = None if draws is None else draws.transpose(0, 1).reshape(-1, VIEW_DRAWS)  # image-major, as ``stacked``
    views = augment(stacked, cfg, generator, draws=flat).view(-1, b, 3, cfg.size, cfg.size)
    if k == 3:
        mix = lam.to(frames.device, non_blocking=True).view(b, 1, 1, 1)
        fa, fb, fc = views
        return mix * fa + (1 - mix) * fb, mix * fc + (1 - mix) * fb
    return views[0], views[1]
