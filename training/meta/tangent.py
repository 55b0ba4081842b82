"""Forward-mode tangent ``J·d`` of a network at its last forward, read off that forward's saved activations.

The meta step needs ``J·d``: how the real forward's outputs ``(h, z)`` move along a parameter direction ``d``.
``torch.func.jvp`` recomputes the whole primal forward to get it. Here the real forward runs under a `Tape`,
which keeps each leaf module's input and output (tensors autograd keeps anyway), and `tangent` then runs a
tangent-only pass: every leaf module is replaced by its linearisation at the recorded input (a convolution
costs ``conv(t, W) + conv(x, dW)``, one term less at the stem, whose input tangent is zero; normalisation,
activation and pooling layers are elementwise), while the containers' own ``forward`` code runs on the
tangents as it is. That is exact when every container's code is linear in its activations (residual sums,
flatten), so it is allowed only for the containers and leaves listed here (`unsupported_reason`): timm's
ResNet family, ``nn.Sequential`` and the trainer's own modules. Other models take the JVP route.

    with Tape(model) as tape:
        h, z = model(x)                                      # the real forward, with its autograd graph
    th, tz = tangent(model, tape, {"backbone.conv1.weight": d1, ...})   # exact J·d, no graph, no recompute
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..model import ContrastiveModel, ProjectionHead

__all__ = ["Tape", "tangent", "unsupported_reason"]

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class _Call:
    input: torch.Tensor
    output: torch.Tensor
    version: int  # input._version when recorded: an in-place change after that would corrupt the rule


class Tape:
    """Records, for one forward of ``module``, the input and output of every leaf module, in call order."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.unsupported = unsupported_reason(module)  # checked once here; `tangent` refuses such a tape
        self.calls: dict[nn.Module, list[_Call]] = {}
        self.input: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> Tape:
        def record_input(_module, args):
            if self.input is not None:
                raise RuntimeError("a Tape records one forward: open a new Tape for each forward")
            self.input = args[0]

        def record(module, args, output):
            self.calls.setdefault(module, []).append(_Call(args[0], output, args[0]._version))

        self._handles = [self.module.register_forward_pre_hook(record_input)]
        self._handles += [m.register_forward_hook(record) for m in _leaves(self.module)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if next(m.children(), None) is None]


class _Pass:
    """The tangents known to be zero in one pass, so that rules skip their terms (frozen parameters, the input).

    A zero stays known only while its version is unchanged: container code may add into it in place
    (``x += shortcut`` in a residual block), after which it is an ordinary tangent.
    """

    def __init__(self) -> None:
        self.zeros: list[tuple[torch.Tensor, int]] = []  # the tensors are kept alive, so `is` stays valid

    def zero_like(self, t: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(t)
        self.zeros.append((z, z._version))
        return z

    def is_zero(self, t: torch.Tensor) -> bool:
        return any(t is z and t._version == version for z, version in self.zeros)


def _check_unchanged(module: nn.Module, call: _Call) -> torch.Tensor:
    if call.input._version != call.version:
        raise RuntimeError(
            f"{type(module).__name__}'s input was modified in place after its forward, so the linearised tangent "
            "cannot read it: use MetaStepConfig(hypergrad='jvp') for this model"
        )
    return call.input


def _plus(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return b if a is None else a if b is None else a + b


def _bilinear_rule(
    apply: Callable,
    bias_shape: tuple[int, ...],
    module: nn.Module,
    call: _Call,
    t: torch.Tensor,
    dp: Tensors,
    tp: _Pass,
) -> torch.Tensor:
    """Rule for ``y = apply(x, W, b)``, linear in ``x`` and in ``(W, b)``: ``t' = apply(t, W) + apply(x, dW, db)``."""
    out = None if tp.is_zero(t) else apply(t, module.weight, None)
    dw, db = dp.get("weight"), dp.get("bias")
    if dw is not None:
        out = _plus(out, apply(_check_unchanged(module, call), dw, db))
    elif db is not None:  # the bias alone moves: broadcast to the output's shape, also from a known zero
        out = (out if out is not None else torch.zeros_like(call.output)) + db.view(bias_shape)
    return tp.zero_like(call.output) if out is None else out


def _conv_rule(module, call, t, dp, tp):
    m = module

    def conv(x, w, b):
        return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)

    return _bilinear_rule(conv, (1, -1) + (1,) * (call.output.dim() - 2), module, call, t, dp, tp)


def _linear_rule(module, call, t, dp, tp):
    return _bilinear_rule(F.linear, (-1,), module, call, t, dp, tp)


def _batch_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and 1/sqrt(var + eps) of ``x`` as BatchNorm's training forward computes them (float32+)."""
    if x.is_cuda:
        return torch.batch_norm_stats(x, eps)  # one fused Welford pass (what SyncBatchNorm uses)
    dims = [0, *range(2, x.dim())]
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    count = x.numel() / x.shape[1]
    mean = x.sum(dims) / count  # two passes, not torch.var_mean: several times faster over NCHW on CPU;
    centred = x - mean.view((1, -1) + (1,) * (x.dim() - 2))  # centred, not E[x²] − μ²: no cancellation
    return mean, ((centred * centred).sum(dims) / count + eps).rsqrt()


def _batch_norm_rule(module: nn.modules.batchnorm._BatchNorm, call, t, dp, tp):
    """Tangent of BatchNorm with the statistics its forward used: the batch's in training, else the running ones.

    In training mode the statistics move with the input: with x̂ = (x − μ)·r, the input part of the tangent is
    γ·r·(t − mean(t) − x̂·mean(t·x̂)), which is BatchNorm's backward formula applied to t, so it runs as one fused
    ``native_batch_norm_backward``; the parameter part is dγ·x̂ + dβ, one ``addcmul``.
    """
    x = _check_unchanged(module, call)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    running_mean, running_var = module.running_mean, module.running_var
    batch_stats = module.training or running_mean is None or running_var is None
    if batch_stats or running_mean is None or running_var is None:
        mean, r = _batch_stats(x, module.eps)
    else:
        mean, r = running_mean, (running_var + module.eps).rsqrt()
    out = None
    if not tp.is_zero(t):
        if batch_stats:
            out = torch.ops.aten.native_batch_norm_backward(
                t, x, module.weight, None, None, mean, r, True, module.eps, [True, False, False]
            )[0]
        else:
            scale = r if module.weight is None else module.weight * r
            out = t * scale.view(shape).to(t.dtype)
    dw, db = dp.get("weight"), dp.get("bias")
    if dw is not None or db is not None:
        scale = dw * r if dw is not None else torch.zeros_like(r)  # dγ·x̂ + dβ = x·(dγ·r) + (dβ − μ·r·dγ)
        shift = (db if db is not None else 0) - mean * scale
        out = _plus(out, torch.addcmul(shift.view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype)))
    return tp.zero_like(call.output) if out is None else out.to(call.output.dtype)


def _relu_rule(module, call, t, dp, tp):
    # ReLU's derivative mask (output > 0) applied to t; an in-place ReLU records its output as its input,
    # the mask is the same either way
    return t if tp.is_zero(t) else torch.ops.aten.threshold_backward(t, call.output.to(t.dtype), 0)


def _max_pool_rule(module: nn.MaxPool2d, call, t, dp, tp):
    if tp.is_zero(t):
        return tp.zero_like(call.output)
    m = module
    _, index = F.max_pool2d(
        _check_unchanged(module, call), m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True
    )
    return t.flatten(2).gather(2, index.flatten(2)).view_as(index)


def _linear_map_rule(module, call, t, dp, tp):
    """Parameter-free linear layers (pooling by averaging, flatten, identity): the tangent goes through as is."""
    return tp.zero_like(call.output) if tp.is_zero(t) else type(module).forward(module, t)


_LEAF_RULES: dict[type, Callable] = {
    nn.Conv2d: _conv_rule,
    nn.Linear: _linear_rule,
    nn.BatchNorm1d: _batch_norm_rule,
    nn.BatchNorm2d: _batch_norm_rule,
    nn.ReLU: _relu_rule,
    nn.MaxPool2d: _max_pool_rule,
    nn.AdaptiveAvgPool2d: _linear_map_rule,
    nn.AvgPool2d: _linear_map_rule,
    nn.Flatten: _linear_map_rule,
    nn.Identity: _linear_map_rule,
    nn.Dropout: _linear_map_rule,  # allowed only when it is the identity (see _CONDITIONS)
}
# Containers whose own forward code is linear in the activations (given their condition below).
_LINEAR_CONTAINERS = {
    nn.Sequential,
    ContrastiveModel,
    ProjectionHead,
    SelectAdaptivePool2d,
    BasicBlock,
    Bottleneck,
    ResNet,
}
# Why a known layer cannot be linearised exactly in its current configuration (None: it can).
_CONDITIONS: dict[type, Callable[[nn.Module], str | None]] = {
    nn.Conv2d: lambda m: None if m.padding_mode == "zeros" else f"padding_mode={m.padding_mode!r}",
    nn.Dropout: lambda m: None if m.p == 0 or not m.training else "active dropout (random masks)",
    nn.MaxPool2d: lambda m: None if not m.return_indices else "return_indices=True",
    ResNet: lambda m: (
        "drop_rate > 0 (functional dropout)"
        if m.drop_rate and m.training
        else "gradient checkpointing"
        if m.grad_checkpointing
        else None
    ),
}


def unsupported_reason(module: nn.Module) -> str | None:
    """Why `tangent` cannot be exact for ``module`` (a layer it does not know), or None when it can."""
    for name, m in module.named_modules():
        kind, label = type(m), f"{name or 'module'} ({type(m).__name__})"
        if next(m.children(), None) is None:
            if kind not in _LEAF_RULES:
                return f"no tangent rule for leaf {label}"
            extra = sorted({n for n, _ in m.named_parameters(recurse=False)} - {"weight", "bias"})
            if extra:
                return f"{label}: parameters {extra} (a reparametrised weight, e.g. torch.nn.utils.weight_norm)"
        elif kind not in _LINEAR_CONTAINERS and not (
            isinstance(m, nn.Sequential) and kind.forward is nn.Sequential.forward  # subclasses: same code
        ):
            return f"{label} is not a known linear container"
        if reason := _CONDITIONS.get(kind, lambda _: None)(m):
            return f"{label}: {reason}"
    return None


def tangent(module: nn.Module, tape: Tape, param_tangents: Tensors):
    """``J·d``: the tangent of ``module``'s recorded forward along ``param_tangents`` (parameter name -> tangent;
    missing parameters do not move), with the input held fixed. Returns the forward's output structure."""
    if tape.module is not module or tape.input is None:
        raise ValueError("the tape holds no forward of this module: run it under `with Tape(module) as tape:` first")
    if tape.unsupported is not None:
        raise ValueError(
            f"the linearised tangent cannot be exact for this model: {tape.unsupported}; use torch.func.jvp"
        )
    tp = _Pass()
    name_of = {id(p): name for name, p in module.named_parameters()}  # a weight shared by modules has one name
    cursor: dict[nn.Module, int] = {}

    def linearised(m: nn.Module):
        rule = _LEAF_RULES[type(m)]
        full = {name: name_of[id(p)] for name, p in m.named_parameters(recurse=False)}
        names = list(full)

        def forward(t: torch.Tensor) -> torch.Tensor:
            i = cursor.get(m, 0)
            cursor[m] = i + 1
            dp = {name: param_tangents[full[name]] for name in names if full[name] in param_tangents}
            return rule(m, tape.calls[m][i], t, dp, tp)

        return forward

    leaves = _leaves(module)
    try:
        for m in leaves:
            m.forward = linearised(m)  # instance attribute: nn.Module.__call__ runs it instead of the class's
        with torch.no_grad():
            return module(tp.zero_like(tape.input))
    finally:
        for m in leaves:
            del m.forward
