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

1. The real forwards ``(h, z)`` at θ, one per BatchNorm batch (``config.bn_views``):
   - ``"per_view"`` (the default, the reference's MU train.py:129-130, 153-154, 170-171): ``model(x1)`` then
     ``model(x2)``, so every BatchNorm layer normalises each view with that view's own batch statistics; the meta
     batch is forwarded the same way. In train mode each forward updates the running statistics, so they move
     **twice per step**, first with view 1's batch statistics, then with view 2's (``num_batches_tracked`` += 2),
     exactly as the reference's real step updates them;
   - ``"joint"`` (SimCLR / lightly style): one ``model(cat(x1, x2))``, statistics over both views; running
     statistics move once. A different algorithm, not a relabelling: the loss, the backbone update and
     CMW-Net's hypergradient all change (``benchmarks/bench_meta.py`` prints the hypergradients' cosine).
   These forwards are both the reference's virtual forwards and its real ones (same θ, same inputs), so they are
   the only passes that update BatchNorm running statistics; every other pass runs through
   ``torch.func.functional_call`` on cloned buffers. ``h``, ``z`` hold the rows of x1, then of x2.
2. Virtual step θ' = θ - lr·(μ·buf + g + wd·θ), g = ∇θ L̂, L̂ = Σ w̃(α, h) ℓ (CMW input h not detached),
   mirroring the optimizer's current lr, momentum buffer (if it exists), dampening, nesterov, weight decay.
3. Meta loss: unweighted NT-Xent of the meta batch at θ'; v = ∇θ' L_meta.
4. Hypergradient dL_meta/dα = -∂/∂α <c(α), J·(κ ⊙ v)>, with c = ∂L̂/∂(h, z), J = ∂(h, z)/∂θ and κ = ∂θ'/∂g
   (lr, times the momentum factor). Only the tangent J·(κ ⊙ v) touches the backbone, and it does not depend on
   α, so the α-part is a tiny computation on (h, z). Three exact routes give the tangent (``hypergrad``):
   - ``"linearised"`` (what ``"auto"``, the default, takes wherever it is exact: timm ResNets and plain
     ``nn.Sequential`` CNNs, see `timm_uscl.training.meta.tangent`): a tangent-only pass over the real forward's
     recorded activations (one tangent pass per real forward), so nothing is recomputed; runs under bf16
     autocast. 3.4-3.5x a plain step on CPU at 64² with per_view (each step with the same batching); measured
     before per_view existed, joint: 2.9-3.4x at 64²/112², 3.45x on an H100 at a GPU-filling batch
     (benchmarks/RESULTS.md);
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
of the reference. SyncBatchNorm is not supported in the lookahead. With ``"per_view"`` the DDP model is called
once per view before the one backward (each parameter's gradient hook still fires once); DDP broadcasts rank 0's
buffers at each call, as it does for any forward.

`timm_uscl.training.meta.graphs.StepGraphs` runs both steps as CUDA graphs at static shapes (eager elsewhere).

``MetaStepConfig.lookahead`` restricts the virtual step to parameters whose names start with the given
prefixes, e.g. ``("backbone.layer4.", "head.")``: an APPROXIMATION (the other parameters are held fixed in θ'),
cheaper because no backward pass goes below that stage; see benchmarks/RESULTS.md for its accuracy.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import dist
from ..errors import MetaConfigError
from ..losses import nt_xent, weighted_mean
from .config import MetaStepConfig, StepOutput
from .forward import bn_batches, forward_batches
from .hypergrad import hypergradient
from .tangent import Tape
from .virtual_sgd import check_sgd

__all__ = ["cmw_optimizer", "plain_step", "meta_step"]


def cmw_optimizer(cmw: nn.Module, lr: float = 6e-5) -> torch.optim.Adam:
    """CMW-Net's optimizer as in the reference (Adam, lr 6e-5, no weight decay)."""
    return torch.optim.Adam(cmw.parameters(), lr=lr)


def plain_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x1: torch.Tensor,
    x2: torch.Tensor,
    *,
    temperature: float = 0.5,
    autocast: bool = False,
    gather: bool = True,
    bn_views: str = "per_view",
) -> StepOutput:
    """One SimCLR step: NT-Xent mean over both views; the views forwarded apart (``"per_view"``, the
    reference's batching, BN running statistics updated twice) or as one ``cat(x1, x2)`` (``"joint"``)."""
    n = x1.shape[0]
    _, z = forward_batches(model, bn_batches(x1, x2, bn_views), autocast)
    loss = weighted_mean(nt_xent(z[:n], z[n:], temperature, gather))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepOutput(loss.detach())


def _tapes_for(module: nn.Module, config: MetaStepConfig, count: int) -> list[Tape] | None:
    """One `Tape` per real forward when the linearised route will run, else None (JVP route)."""
    if config.hypergrad not in ("auto", "linearised"):
        return None
    tapes = [Tape(module) for _ in range(count)]
    if tapes[0].unsupported is None:
        return tapes
    if config.hypergrad == "linearised":
        raise MetaConfigError(
            f"hypergrad='linearised' cannot be exact for this model: {tapes[0].unsupported}; "
            "use hypergrad='auto' or 'jvp'"
        )
    return None


def _real_forwards(
    model: nn.Module, batches: tuple[torch.Tensor, ...], tapes: list[Tape] | None, autocast: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The real forwards, one per BatchNorm batch, each under its own `Tape` when there are tapes."""
    if tapes is None:
        return forward_batches(model, batches, autocast)
    pending = iter(tapes)

    def taped(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with next(pending):
            return model(x)

    return forward_batches(taped, batches, autocast)


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
    check_sgd(optimizer)
    n = x1.shape[0]
    batches = bn_batches(x1, x2, config.bn_views)
    due = config.due(step)
    if due and (m1 is None or m2 is None):
        raise ValueError(f"iteration {step} updates CMW-Net (interval {config.interval}): pass a meta batch")
    module = dist.unwrap(model)
    tapes = _tapes_for(module, config, len(batches)) if due else None
    h, z = _real_forwards(model, batches, tapes, config.autocast)  # the real forwards, reused as the virtual ones

    meta_loss = None
    if due:
        assert isinstance(optimizer, torch.optim.SGD) and m1 is not None and m2 is not None  # checked above
        grads, meta_loss = hypergradient(module, cmw, optimizer, (x1, x2), h, z, (m1, m2), config, tapes)
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
