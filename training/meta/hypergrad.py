"""The hypergradient dL_meta/dα of CMW-Net's parameters through an exact one-step SGD lookahead (steps 2-4 of
:mod:`.step`'s docstring), by one of three exact routes for the tangent J·(κ ⊙ v).

With ``bn_views="per_view"`` every forward is two forwards (one per view), so J is the Jacobian of the two
per-view forwards, each BatchNorm layer normalising with its own view's batch statistics: the linearised route
runs one tangent pass per recorded forward (per `Tape`), the JVP route recomputes the two forwards under
``torch.func.jvp``, and the double backward differentiates the virtual gradient of the two real forwards."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import jvp

from ..losses import nt_xent, weighted_mean
from .config import MetaStepConfig
from .forward import bn_batches, functional_forward
from .tangent import Tape, tangent
from .virtual_sgd import lookahead_params, virtual_sgd

__all__ = ["hypergradient"]


def _route(config: MetaStepConfig, views: tuple[torch.Tensor, torch.Tensor], tapes: Sequence[Tape] | None) -> str:
    """The hypergradient route to take: ``auto`` is the linearised one when the caller recorded tapes."""
    route = config.hypergrad
    if route == "auto":
        route = "linearised" if tapes is not None else "jvp"
    batch_count = len(bn_batches(*views, config.bn_views)) if route == "linearised" else 0
    if route == "linearised" and (tapes is None or len(tapes) != batch_count):
        raise ValueError(
            f"hypergrad='linearised' needs one Tape per BatchNorm batch of the real forwards ({batch_count} for "
            f"bn_views={config.bn_views!r}, got {0 if tapes is None else len(tapes)}): see "
            "timm_uscl.training.meta.tangent"
        )
    return route


def hypergradient(
    module: nn.Module,
    cmw: nn.Module,
    optimizer: torch.optim.SGD,
    views: tuple[torch.Tensor, torch.Tensor],
    h: torch.Tensor,
    z: torch.Tensor,
    meta_views: tuple[torch.Tensor, torch.Tensor],
    config: MetaStepConfig = MetaStepConfig(),
    tapes: Sequence[Tape] | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """dL_meta/dα for every CMW-Net parameter, and L_meta (detached). See the module docstring, steps 2-4.

    ``views = (x1, x2)`` is the training batch and ``(h, z)`` its outputs at the current θ with their autograd
    graph (the caller's real forwards, one per BatchNorm batch of ``config.bn_views``, rows in the order
    x1 then x2); ``views`` is read only by the ``"jvp"`` route, which recomputes those forwards. ``tapes`` are
    the real forwards' tapes (`Tape`), one per BatchNorm batch, needed by the ``"linearised"`` route (``"auto"``
    takes it when given, else the JVP route; `meta_step` records them only where the model is supported, and
    `tangent` refuses a tape of a model it cannot linearise exactly). The meta batch ``meta_views`` is forwarded
    with the same batching. Nothing here touches ``.grad`` or buffers.
    """
    route = _route(config, views, tapes)
    n = h.shape[0] // 2
    params = lookahead_params(module, optimizer, config.lookahead)
    fixed = {k: p.detach() for k, p in module.named_parameters() if k not in params}
    names, leaves = list(params), list(params.values())

    # c(α) = ∂L̂/∂(h, z): the only place α enters; keep its graph for the final α-gradient.
    hd, zd = h.detach().requires_grad_(), z.detach().requires_grad_()
    virtual = weighted_mean(nt_xent(zd[:n], zd[n:], config.temperature, False), cmw(hd[:n], hd[n:]), False)
    c = torch.autograd.grad(virtual, (hd, zd), create_graph=True)

    double_backward = route == "double_backward"
    u = tuple(ci.detach().requires_grad_(double_backward) for ci in c)
    g = torch.autograd.grad((h, z), leaves, u, retain_graph=True, create_graph=double_backward)
    theta, kappa = virtual_sgd(optimizer, params, g)

    theta = {k: t.requires_grad_() for k, t in theta.items()}
    meta_batches = bn_batches(*meta_views, config.bn_views)
    _, zm = functional_forward(module, {**fixed, **theta}, meta_batches, config.autocast)
    m = meta_views[0].shape[0]
    meta_loss = weighted_mean(nt_xent(zm[:m], zm[m:], config.temperature, False))
    v = torch.autograd.grad(meta_loss, list(theta.values()))
    direction = dict(zip(names, torch._foreach_mul(v, kappa)))

    if route == "linearised":
        assert tapes is not None
        with torch.autocast(h.device.type, dtype=torch.bfloat16, enabled=config.autocast):
            parts = [tangent(module, tape, direction) for tape in tapes]  # each BN batch with its own statistics
        tangents = parts[0] if len(parts) == 1 else tuple(torch.cat(t) for t in zip(*parts))
    elif double_backward:  # g = Jᵀu is linear in u, so ∂<g, d>/∂u = J·d
        tangents = torch.autograd.grad(g, u, list(direction.values()), materialize_grads=True)
    else:
        primals = {k: p.detach() for k, p in params.items()}
        batches = bn_batches(*views, config.bn_views)
        # full precision: torch.func.jvp does not compose with autocast (mixed-dtype conv under the transform)
        _, tangents = jvp(
            lambda p: functional_forward(module, {**fixed, **p}, batches, False), (primals,), (direction,)
        )[:2]
    inner = sum((ci * ti.to(ci.dtype)).sum() for ci, ti in zip(c, tangents))
    return list(torch.autograd.grad(-inner, list(cmw.parameters()))), meta_loss.detach()
