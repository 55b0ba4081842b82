"""The hypergradient dL_meta/dα of CMW-Net's parameters through an exact one-step SGD lookahead (steps 2-4 of
:mod:`.step`'s docstring), by one of three exact routes for the tangent J·(κ ⊙ v)."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp

from ..losses import nt_xent, weighted_mean
from .config import MetaStepConfig
from .forward import functional_forward
from .tangent import Tape, tangent
from .virtual_sgd import lookahead_params, virtual_sgd

__all__ = ["hypergradient"]


def hypergradient(
    module: nn.Module,
    cmw: nn.Module,
    optimizer: torch.optim.SGD,
    x: torch.Tensor,
    h: torch.Tensor,
    z: torch.Tensor,
    m1: torch.Tensor,
    m2: torch.Tensor,
    config: MetaStepConfig = MetaStepConfig(),
    tape: Tape | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """dL_meta/dα for every CMW-Net parameter, and L_meta (detached). See the module docstring, steps 2-4.

    ``(h, z) = module(x)`` at the current θ, with its autograd graph (the caller's real forward); ``x`` is
    ``cat(x1, x2)``, used only by the ``"jvp"`` route; ``tape`` is that forward's `Tape`, needed by the
    ``"linearised"`` route (``"auto"`` takes it when given, else the JVP route; `meta_step` records one only where
    the model is supported, and `tangent` refuses a tape of a model it cannot linearise exactly). Nothing here touches
    ``.grad`` or buffers.
    """
    route = config.hypergrad
    if route == "auto":
        route = "linearised" if tape is not None else "jvp"
    if route == "linearised" and tape is None:
        raise ValueError("hypergrad='linearised' needs the Tape of the real forward: see timm_uscl.training.tangent")
    n = x.shape[0] // 2
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
    _, zm = functional_forward(module, {**fixed, **theta}, torch.cat([m1, m2]), config.autocast)
    meta_loss = weighted_mean(nt_xent(zm[: m1.shape[0]], zm[m1.shape[0] :], config.temperature, False))
    v = torch.autograd.grad(meta_loss, list(theta.values()))
    direction = dict(zip(names, torch._foreach_mul(v, kappa)))

    if route == "linearised":
        assert tape is not None
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.autocast):
            tangents = tangent(module, tape, direction)
    elif double_backward:  # g = Jᵀu is linear in u, so ∂<g, d>/∂u = J·d
        tangents = torch.autograd.grad(g, u, list(direction.values()), materialize_grads=True)
    else:
        primals = {k: p.detach() for k, p in params.items()}
        # full precision: torch.func.jvp does not compose with autocast (mixed-dtype conv under the transform)
        _, tangents = jvp(lambda p: functional_forward(module, {**fixed, **p}, x, False), (primals,), (direction,))[:2]
    inner = sum((ci * ti.to(ci.dtype)).sum() for ci, ti in zip(c, tangents))
    return list(torch.autograd.grad(-inner, list(cmw.parameters()))), meta_loss.detach()
