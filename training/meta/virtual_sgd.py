"""The lookahead's mirror of one ``torch.optim.SGD`` step: θ' and ∂θ'/∂g, exactly as the optimizer would move."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..errors import MetaOptimizerError
from .forward import Tensors

__all__ = ["check_sgd", "virtual_sgd", "lookahead_params"]


def check_sgd(optimizer: torch.optim.Optimizer) -> None:
    if not isinstance(optimizer, torch.optim.SGD):
        raise MetaOptimizerError(
            f"the meta step mirrors an SGD update, got {type(optimizer).__name__}: build the main optimizer "
            "with torch.optim.SGD (Meta-USCL uses lr 0.1, momentum 0.9, weight_decay 1e-4) or turn meta off"
        )
    if any(group.get("maximize", False) for group in optimizer.param_groups):
        raise MetaOptimizerError("the meta step cannot mirror SGD(maximize=True): use maximize=False")


def virtual_sgd(
    optimizer: torch.optim.SGD, params: Tensors, grads: tuple[torch.Tensor, ...]
) -> tuple[Tensors, list[float]]:
    """θ' (detached) after one step of ``optimizer`` with ``grads``, and κ per parameter: θ' = const - κ·g.

    Parameters are bucketed by (param group, momentum buffer present) and each bucket takes a few
    ``torch._foreach_*`` ops, as torch's own SGD does: one op per parameter would be hundreds of small kernels
    per iteration, which is what bounds a GPU step at small batch.
    """
    group_index = {id(p): i for i, group in enumerate(optimizer.param_groups) for p in group["params"]}
    buckets: dict[tuple[int, bool], list] = defaultdict(list)
    for (name, p), g in zip(params.items(), grads):
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        buckets[group_index[id(p)], buf is not None].append((name, p.detach(), g.detach(), buf))
    theta: dict[str, torch.Tensor] = {}
    kappa: dict[str, float] = {}
    for (gi, has_buf), items in buckets.items():
        group = optimizer.param_groups[gi]
        lr, mu, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        names, ps, gs, bufs = zip(*items)
        d = torch._foreach_add(gs, ps, alpha=wd) if wd else list(gs)
        k = 1.0
        if mu:
            if not has_buf:  # first step: torch's SGD sets buf = d (no dampening)
                new_buf = d
            elif damp:  # mu·buf + (1 - damp)·d
                new_buf = torch._foreach_mul(bufs, mu)
                torch._foreach_add_(new_buf, d, alpha=1 - damp)
                k = 1 - damp
            else:
                new_buf = torch._foreach_add(d, bufs, alpha=mu)
            if group["nesterov"]:
                d, k = torch._foreach_add(d, new_buf, alpha=mu), 1 + mu * k
            else:
                d = new_buf
        theta.update(zip(names, torch._foreach_add(ps, d, alpha=-lr)))
        kappa.update(dict.fromkeys(names, lr * k))
    return {name: theta[name] for name in params}, [kappa[name] for name in params]


def lookahead_params(module: nn.Module, optimizer: torch.optim.Optimizer, prefixes: tuple[str, ...] | None):
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return {
        name: p
        for name, p in module.named_parameters()
        if p.requires_grad and id(p) in in_optimizer and (prefixes is None or name.startswith(prefixes))
    }
