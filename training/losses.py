"""NT-Xent per anchor and the CMW-Net pair weighting (Meta-USCL ``loss.py``), as pure functions.

Anchors are ``cat(z1, z2)`` (2n rows on this rank); each has one positive (the other view of its pair) and
2N-2 negatives, N the number of pairs over all ranks when ``gather`` is on and training is distributed.
The per-anchor losses are returned unreduced so that the meta step can weight them.

Weighting (reference ``InfoNCE(..., weights)``): pair weight w_i is shared by both directions of pair i and
self-normalised over the global batch, ``L = sum_k w~_k l_k`` with ``w~ = cat(w, w) / sum(cat(w, w))``; with
no weights this is the plain mean. Under DDP each rank returns ``world_size *`` its share of the global loss, so
that DDP's gradient averaging yields the gradient of the global loss and the mean of the ranks' values is the
global loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import dist

__all__ = ["nt_xent", "normalize_pair_weights", "weighted_mean"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = True) -> torch.Tensor:
    """Per-anchor NT-Xent (cosine similarity / ``temperature``), shape ``(2n,)``, computed in float32 (or float64).

    Row k < n is anchor ``z1[k]`` (positive ``z2[k]``), row n + k is anchor ``z2[k]`` (positive ``z1[k]``).
    """
    dtype = torch.promote_types(z1.dtype, torch.float32)
    z1 = F.normalize(z1.to(dtype), dim=1)
    z2 = F.normalize(z2.to(dtype), dim=1)
    n = z1.shape[0]
    anchors = torch.cat([z1, z2])
    if gather and dist.is_distributed():
        k1, k2, offset = dist.gather(z1), dist.gather(z2), dist.rank() * n
    else:
        k1, k2, offset = z1, z2, 0
    m = k1.shape[0]  # pairs over all ranks
    logits = anchors @ torch.cat([k1, k2]).T / temperature  # (2n, 2m)
    rows = torch.arange(2 * n, device=z1.device)
    own = offset + rows % n + m * (rows >= n)  # column of each anchor itself
    pos = offset + rows % n + m * (rows < n)  # column of its positive
    self_mask = torch.arange(2 * m, device=z1.device) == own[:, None]  # not one_hot: no host-side range check
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, pos, reduction="none")


def normalize_pair_weights(weights: torch.Tensor, gather: bool = True) -> torch.Tensor:
    """Pair weights ``(n,)`` -> anchor weights ``(2n,)`` summing to one over all anchors of all ranks."""
    full = torch.cat([weights, weights])
    total = full.sum()
    if gather:
        total = dist.all_reduce_sum(total)
    return full / total


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None = None, gather: bool = True) -> torch.Tensor:
    """Reduce per-anchor ``losses`` (from `nt_xent`) with optional pair ``weights`` ``(n,)`` (see module doc)."""
    if weights is None:
        return losses.mean()
    scale = dist.world_size() if gather else 1
    return (normalize_pair_weights(weights, gather) * losses).sum() * scale
