"""The Meta-USCL bi-level step: CMW-Net learns pair weights through a one-step SGD lookahead (exact).

API::

    from timm_uscl.training.meta import MetaStepConfig, cmw_optimizer, meta_step, plain_step
    out = plain_step(model, optimizer, x1, x2)                      # SimCLR / USCL baseline
    out = meta_step(model, cmw, optimizer, cmw_opt, x1, x2, m1, m2, step=it, config=MetaStepConfig())
    out.loss, out.weights, out.meta_loss                             # detached tensors; nothing synced to host

``model`` is a `ContrastiveModel` or a DDP wrapper of one; ``optimizer`` must be ``torch.optim.SGD`` (the
lookahead mirrors it); the caller steps LR schedulers and owns the meta batch iterator (``m1, m2`` are the two
views of a meta batch; pass ``None`` on iterations where ``config.due(step)`` is false).

One meta iteration (reference: MU train.py:124-185, minus its bugs):

1. One forward ``(h, z) = model(cat(x1, x2))`` at θ. It is both the reference's virtual forward and its real
   forward (same θ, same inputs), so it is the only pass that updates BatchNorm running statistics; every other
   pass runs through ``torch.func.functional_call`` on cloned buffers. Both views go through one forward, so
   BatchNorm batch statistics cover both views (SimCLR / lightly style; the reference forwards them apart).
2. Virtual step θ' = θ - lr·(μ·buf + g + wd·θ), g = ∇θ L̂, L̂ = Σ w̃(α, h) ℓ (CMW input h not detached),
   mirroring the optimizer's current lr, momentum buffer (if it exists), dampening, nesterov, weight decay.
3. Meta loss: unweighted NT-Xent of the meta batch at θ'; v = ∇θ' L_meta.
4. Hypergradient dL_meta/dα = -∂/∂α <c(α), J·(κ ⊙ v)>, with c = ∂L̂/∂(h, z), J = ∂(h, z)/∂θ and κ = ∂θ'/∂g
   (lr, times the momentum factor). Only the tangent J·(κ ⊙ v) touches the backbone, and it does not depend on
   α, so the α-part is a tiny computation on (h, z). Three exact routes give the tangent (``hypergrad``):
   - ``"linearised"`` (what ``"auto"``, the default, takes wherever it is exact: timm ResNets and plain
     ``nn.Sequential`` CNNs, see `timm_uscl.training.tangent`): a tangent-only pass over the real forward's
     recorded activations, so nothing is recomputed; runs under bf16 autocast. 2.9-3.4x a plain step on CPU
     at 64²/112², 3.45x on an H100 at a GPU-filling batch (benchmarks/RESULTS.md);
   - ``"jvp"`` (``"auto"`` elsewhere): forward-mode ``torch.func.jvp`` of a recomputed forward. It runs in
     full precision (``torch.func.jvp`` does not compose with autocast) and assumes a deterministic forward
     (no dropout / drop-path: the recomputation would draw new masks);
   - ``"double_backward"``: differentiate the virtual backward ``g = Jᵀu`` (kept with ``create_graph``) with
     respect to its cotangent ``u``. Nothing is recomputed and it works for any model, dropout included, but
     it is the slowest; it is also the independent cross-check of the other routes in the tests.
5. Adam step of CMW-Net (gradients averaged over ranks by hand), then the real SGD step with the updated
   CMW-Net's weights, detached, backpropagated through DDP.

Under DDP the lookahead (steps 2-4) is per rank: local batch, local negatives, ``ddp.module`` for the
functional passes, ``torch.autograd.grad`` on the DDP forward's graph (which does not fire DDP's reducer);
CMW-Net gets the mean of the ranks' exact local hypergradients. On one process it is the exact hypergradient
of the reference. SyncBatchNorm is not supported in the lookahead.

``MetaStepConfig.lookahead`` restricts the virtual step to parameters whose names start with the given
prefixes, e.g. ``("backbone.layer4.", "head.")``: an APPROXIMATION (the other parameters are held fixed in θ'),
cheaper because no backward pass goes below that stage; see benchmarks/RESULTS.md for its accuracy.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, jvp

from timm_uscl.errors import USCLError

from . import dist
from .losses import nt_xent, weighted_mean
from .tangent import Tape, tangent

__all__ = [
    "MetaConfigError",
    "MetaOptimizerError",
    "MetaStepConfig",
    "StepOutput",
    "cmw_optimizer",
    "plain_step",
    "meta_step",
    "hypergradient",
]

Tensors = dict[str, torch.Tensor]


class MetaOptimizerError(USCLError, TypeError):
    """The meta step got an optimizer its lookahead cannot mirror."""


class MetaConfigError(USCLError, ValueError):
    """The meta step's configuration cannot work with this model."""


@dataclass(frozen=True)
class MetaStepConfig:
    temperature: float = 0.5
    interval: int = 1  # update CMW-Net every `interval` iterations (1 = the paper); weights are used every step
    hypergrad: Literal["auto", "linearised", "jvp", "double_backward"] = "auto"  # exact routes, module docstring
    lookahead: tuple[str, ...] | None = None  # parameter-name prefixes: APPROXIMATION, None = exact
    autocast: bool = False  # bf16 autocast for the backbone passes (losses stay in float32)
    gather: bool = True  # real step: negatives from all ranks

    def due(self, step: int) -> bool:
        """Whether iteration ``step`` updates CMW-Net (and so needs a meta batch)."""
        return step % self.interval == 0


@dataclass
class StepOutput:
    loss: torch.Tensor  # the real step's loss on this rank, detached
    weights: torch.Tensor | None = None  # raw sigmoid pair weights (n,) used by the real step, detached
    meta_loss: torch.Tensor | None = None  # meta loss at θ', detached; None when CMW-Net was not updated


def cmw_optimizer(cmw: nn.Module, lr: float = 6e-5) -> torch.optim.Adam:
    """CMW-Net's optimizer as in the reference (Adam, lr 6e-5, no weight decay)."""
    return torch.optim.Adam(cmw.parameters(), lr=lr)


def _forward(model: nn.Module, x: torch.Tensor, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        h, z = model(x)
    return _full(h), _full(z)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _functional_forward(module: nn.Module, params: Tensors, x: torch.Tensor, autocast: bool):
    """``module(x)`` with ``params`` substituted and cloned buffers: BN running statistics stay untouched."""
    buffers = {k: b.clone() for k, b in module.named_buffers()}
    return _forward(lambda inp: functional_call(module, (params, buffers), (inp,)), x, autocast)


def plain_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    temperature: float = 0.5,
    autocast: bool = False,
    gather: bool = True,
) -> StepOutput:
    """One SimCLR step: NT-Xent mean over both views, one forward of ``cat(x1, x2)``."""
    n = x1.shape[0]
    _, z = _forward(model, torch.cat([x1, x2]), autocast)
    loss = weighted_mean(nt_xent(z[:n], z[n:], temperature, gather))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepOutput(loss.detach())


def _check_sgd(optimizer: torch.optim.Optimizer) -> None:
    if not isinstance(optimizer, torch.optim.SGD):
        raise MetaOptimizerError(
            f"the meta step mirrors an SGD update, got {type(optimizer).__name__}: build the main optimizer "
            "with torch.optim.SGD (Meta-USCL uses lr 0.1, momentum 0.9, weight_decay 1e-4) or turn meta off"
        )
    if any(group.get("maximize", False) for group in optimizer.param_groups):
        raise MetaOptimizerError("the meta step cannot mirror SGD(maximize=True): use maximize=False")


def _virtual_sgd(
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
    theta, kappa = {}, {}
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


def _lookahead_params(module: nn.Module, optimizer: torch.optim.Optimizer, prefixes: tuple[str, ...] | None):
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return {
        name: p
        for name, p in module.named_parameters()
        if p.requires_grad and id(p) in in_optimizer and (prefixes is None or name.startswith(prefixes))
    }


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
    params = _lookahead_params(module, optimizer, config.lookahead)
    fixed = {k: p.detach() for k, p in module.named_parameters() if k not in params}
    names, leaves = list(params), list(params.values())

    # c(α) = ∂L̂/∂(h, z): the only place α enters; keep its graph for the final α-gradient.
    hd, zd = h.detach().requires_grad_(), z.detach().requires_grad_()
    virtual = weighted_mean(nt_xent(zd[:n], zd[n:], config.temperature, False), cmw(hd[:n], hd[n:]), False)
    c = torch.autograd.grad(virtual, (hd, zd), create_graph=True)

    double_backward = route == "double_backward"
    u = tuple(ci.detach().requires_grad_(double_backward) for ci in c)
    g = torch.autograd.grad((h, z), leaves, u, retain_graph=True, create_graph=double_backward)
    theta, kappa = _virtual_sgd(optimizer, params, g)

    theta = {k: t.requires_grad_() for k, t in theta.items()}
    _, zm = _functional_forward(module, {**fixed, **theta}, torch.cat([m1, m2]), config.autocast)
    meta_loss = weighted_mean(nt_xent(zm[: m1.shape[0]], zm[m1.shape[0] :], config.temperature, False))
    v = torch.autograd.grad(meta_loss, list(theta.values()))
    direction = dict(zip(names, torch._foreach_mul(v, kappa)))

    if route == "linearised":
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=config.autocast):
            tangents = tangent(module, tape, direction)
    elif double_backward:  # g = Jᵀu is linear in u, so ∂<g, d>/∂u = J·d
        tangents = torch.autograd.grad(g, u, list(direction.values()), materialize_grads=True)
    else:
        primals = {k: p.detach() for k, p in params.items()}
        # full precision: torch.func.jvp does not compose with autocast (mixed-dtype conv under the transform)
        _, tangents = jvp(lambda p: _functional_forward(module, {**fixed, **p}, x, False), (primals,), (direction,))
    inner = sum((ci * ti.to(ci.dtype)).sum() for ci, ti in zip(c, tangents))
    return list(torch.autograd.grad(-inner, list(cmw.parameters()))), meta_loss.detach()


def _tape_for(module: nn.Module, config: MetaStepConfig) -> Tape | None:
    """A `Tape` for the real forward when the linearised route will run, else None (JVP route)."""
    if config.hypergrad not in ("auto", "linearised"):
        return None
    tape = Tape(module)
    if tape.unsupported is None:
        return tape
    if config.hypergrad == "linearised":
        raise MetaConfigError(
            f"hypergrad='linearised' cannot be exact for this model: {tape.unsupported}; use hypergrad='auto' or 'jvp'"
        )
    return None


def meta_step(
    model: nn.Module,
    cmw: nn.Module,
    optimizer: torch.optim.Optimizer,
    cmw_optimizer: torch.optim.Optimizer,
    x1: torch.Tensor,
    x2: torch.Tensor,
    m1: torch.Tensor | None = None,
    m2: torch.Tensor | None = None,
    *,
    step: int = 0,
    config: MetaStepConfig = MetaStepConfig(),
) -> StepOutput:
    """One Meta-USCL iteration (module docstring). CMW-Net is updated when ``config.due(step)``."""
    _check_sgd(optimizer)
    n = x1.shape[0]
    x = torch.cat([x1, x2])
    due = config.due(step)
    if due and (m1 is None or m2 is None):
        raise ValueError(f"iteration {step} updates CMW-Net (interval {config.interval}): pass a meta batch")
    module = dist.unwrap(model)
    tape = _tape_for(module, config) if due else None
    with tape or contextlib.nullcontext():
        h, z = _forward(model, x, config.autocast)  # the real forward, reused as the virtual one

    meta_loss = None
    if due:
        grads, meta_loss = hypergradient(module, cmw, optimizer, x, h, z, m1, m2, config, tape)
        dist.all_reduce_mean_(grads)
        for p, g in zip(cmw.parameters(), grads):
            p.grad = g
        cmw_optimizer.step()

    with torch.no_grad():
        weights = cmw(h[:n], h[n:])
    loss = weighted_mean(nt_xent(z[:n], z[n:], config.temperature, config.gather), weights, config.gather)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepOutput(loss.detach(), weights, meta_loss)
