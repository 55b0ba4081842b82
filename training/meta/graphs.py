"""The plain and the meta step replayed as CUDA graphs at static shapes, with eager fallback.

Why: at the paper's batch (32 pairs, 64²) a step on a large GPU is bound by the host, not the device: a plain
step issues ~1.8k operator calls and an exact meta step ~6.3k (benchmarks/RESULTS.md), each a kernel launch of
a few microseconds of Python and driver work. Captured once as a CUDA graph, a whole step (forwards, lookahead,
tangent pass, CMW-Net's Adam step, backward, SGD step) is one launch.

How (PyTorch's "whole-network capture"): `StepGraphs` keeps one graph per step kind (plain; meta updating
CMW-Net; meta not updating it) for the first input shape that kind sees. A kind's first ``warmup`` steps run
eagerly on a side stream (cuDNN autotuning, cuBLAS workspaces, optimizer state creation); once the step's
state is steady, the step is captured with `torch.cuda.graph` into static input buffers and replayed; later
steps copy their inputs into those buffers, replay, and get clones of the static outputs (the next replay
overwrites them). Every host-side value a graph bakes in is part of its state key: the parameters', buffers'
and optimizer states' storage, every param-group hyper-parameter (the per-epoch lr included), train/eval
mode, ``requires_grad``. A changed key is captured anew (once steady: one eager step first), the old graph is
released. Results equal the eager step's up to float rounding (CMW-Net's Adam runs with ``capturable=True``
during capture: bias correction on the device).

Eager fallback, and why (`GraphStats.reason`): a CPU step; a distributed step (DDP's reducer and NCCL are not
captured here); an optimizer other than SGD / Adam / AdamW; any other input shape than the captured one (a last
partial batch); a capture that failed (a host sync or an uncapturable op in the model: ``mode="auto"`` logs
it once and keeps that kind eager; ``mode="on"`` raises). ``mode="off"`` is always eager.

    graphs = StepGraphs(mode="auto")        # TrainConfig.graphs
    out = graphs.meta_step(model, cmw, optimizer, cmw_opt, x1, x2, m1, m2, step=it, config=step_cfg)
    out = graphs.plain_step(model, optimizer, x1, x2, temperature=0.5, bn_views="per_view")

Same arguments and outputs as `plain_step` / `meta_step`. After a replay each ``.grad`` holds the replayed
step's gradient, as after an eager step.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import dist
from ..errors import MetaConfigError
from .config import GRAPH_MODES, MetaStepConfig, StepOutput
from .step import meta_step, plain_step

__all__ = ["GraphStats", "StepGraphs", "CudaGraphBackend"]

log = logging.getLogger(__name__)
_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
Step = Callable[..., StepOutput]


@dataclass
class GraphStats:
    """What ran how: steps run eagerly, graphs captured, steps replayed, and why the last step ran eagerly."""

    eager: int = 0
    captures: int = 0
    replays: int = 0
    reason: str | None = None  # None when the last step was replayed
    failed: dict[str, str] = field(default_factory=dict)  # kind -> why its capture failed (kept eager)


class CudaGraphBackend:
    """The device side: eager warm-up on a side stream, capture, replay (`torch.cuda.graph`)."""

    def __init__(self) -> None:
        self._side: torch.cuda.Stream | None = None

    def unsupported(self, tensors: Sequence[torch.Tensor]) -> str | None:
        device = tensors[0].device
        if device.type != "cuda" or not torch.cuda.is_available():
            return f"the step runs on {device.type}: CUDA graphs need a CUDA device"
        return None

    def eager(self, fn: Callable[[], StepOutput]) -> StepOutput:
        """A warm-up step on a side stream, as PyTorch's capture recipe asks (lazy per-stream initialisation)."""
        if self._side is None:
            self._side = torch.cuda.Stream()
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):
            out = fn()
        torch.cuda.current_stream().wait_stream(self._side)
        return out

    def capture(self, fn: Callable[[], StepOutput]) -> tuple[Any, StepOutput]:
        """Record ``fn`` (nothing runs); returns the graph and its static outputs."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: the data loader's pin-memory thread may call CUDA while this thread captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = fn()
        return graph, out

    def replay(self, graph: Any) -> None:
        graph.replay()


@dataclass
class _Slot:
    """One step kind's graph: its input shapes, warm-up count, last state key, and the captured graph."""

    shapes: tuple
    warm: int = 0
    last_key: tuple | None = None
    graph: Any = None
    key: tuple | None = None  # the state key the graph was captured at
    inputs: list[torch.Tensor] = field(default_factory=list)
    out: StepOutput | None = None
    grads: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (parameter, static .grad)


class StepGraphs:
    """`plain_step` / `meta_step` as CUDA graphs where they can be (module docstring), else eagerly."""

    def __init__(self, mode: str = "auto", warmup: int = 3, backend: Any = None) -> None:
        if mode not in GRAPH_MODES:
            raise MetaConfigError(f"graphs={mode!r}: choose one of {', '.join(GRAPH_MODES)} (auto: where supported)")
        self.mode, self.warmup = mode, max(int(warmup), 1)
        self.backend = backend if backend is not None else CudaGraphBackend()
        self.stats = GraphStats()
        self._slots: dict[str, _Slot] = {}
        self._logged: set[str] = set()

    def plain_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor, **kwargs
    ) -> StepOutput:
        fn = functools.partial(_plain, model, optimizer, kwargs)
        return self.run("plain", fn, [x1, x2], [model], [optimizer], tuple(sorted(kwargs.items())))

    def meta_step(
        self,
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
        due = config.due(step)
        if not due:
            tensors = [x1, x2]
        elif m1 is not None and m2 is not None:
            tensors = [x1, x2, m1, m2]
        else:  # the eager step's own error, before anything is captured
            return meta_step(model, cmw, optimizer, cmw_optimizer, x1, x2, m1, m2, step=step, config=config)
        fn = functools.partial(_meta, model, cmw, optimizer, cmw_optimizer, step, config)
        kind = "meta" if due else "meta-no-update"
        return self.run(kind, fn, tensors, [model, cmw], [optimizer, cmw_optimizer], (config,))

    def run(
        self,
        kind: str,
        fn: Step,
        tensors: Sequence[torch.Tensor],
        modules: Sequence[nn.Module] = (),
        optimizers: Sequence[torch.optim.Optimizer] = (),
        static: tuple = (),
    ) -> StepOutput:
        """``fn(*tensors)``, replayed from kind's graph when it can be, else eagerly (module docstring).

        ``modules`` and ``optimizers`` are what ``fn`` reads and updates (their state is part of the graph's key);
        ``static`` any other value ``fn`` bakes in (hashable)."""
        if self.mode == "off":
            return self._eager(fn, tensors, "graphs=off", device=False)
        reason = self.backend.unsupported(tensors) or _unsupported_setup(modules, optimizers)
        if reason is not None:
            if self.mode == "on":
                raise MetaConfigError(f"graphs='on' cannot capture this step: {reason}; use graphs=auto or off")
            return self._eager(fn, tensors, reason, device=False)
        if kind in self.stats.failed:
            return self._eager(fn, tensors, self.stats.failed[kind])
        shapes = (_shapes(tensors), static, tuple(id(m) for m in (*modules, *optimizers)))
        slot = self._slots.setdefault(kind, _Slot(shapes))
        if slot.shapes != shapes:
            return self._eager(fn, tensors, f"input shapes differ from those {kind}'s graph was captured at")
        for opt in optimizers:
            _adam_step_on_device(opt)
        key = _state_key(modules, optimizers)
        if slot.graph is None or slot.key != key:
            steady = slot.last_key == key
            slot.last_key = key
            if slot.warm < self.warmup or not steady:
                slot.warm += 1
                return self._eager(fn, tensors, f"warm-up of {kind} (state {'changed' if slot.warm > 1 else 'new'})")
            if not self._capture(kind, slot, fn, tensors, modules, optimizers):
                return self._eager(fn, tensors, self.stats.failed[kind])
            slot.key = key
        for static_in, x in zip(slot.inputs, tensors):
            static_in.copy_(x)
        self.backend.replay(slot.graph)
        for p, g in slot.grads:
            p.grad = g
        self.stats.replays += 1
        self.stats.reason = None
        assert slot.out is not None
        return _clone(slot.out)

    def _eager(self, fn: Step, tensors: Sequence[torch.Tensor], reason: str, device: bool = True) -> StepOutput:
        self.stats.eager += 1
        self.stats.reason = reason
        return self.backend.eager(lambda: fn(*tensors)) if device else fn(*tensors)

    def _capture(self, kind, slot, fn, tensors, modules, optimizers) -> bool:
        """Capture ``fn`` on static copies of ``tensors``; False (and the kind stays eager) where it fails."""
        slot.graph = slot.out = None  # release the previous graph (its memory pool) before capturing anew
        slot.grads = []
        _drop_grads(modules)  # no step reads the gradients it finds; the old graph's are freed outside the capture
        slot.inputs = [torch.empty_like(x).copy_(x) for x in tensors]
        capturable = [_set_capturable(opt, True) for opt in optimizers]
        try:
            slot.graph, slot.out = self.backend.capture(lambda: fn(*slot.inputs))
        except Exception as err:  # any op that cannot be captured: the step itself is fine eagerly
            slot.graph = slot.out = None
            _drop_grads(modules)  # gradients recorded during the failed capture point into its discarded pool
            reason = f"capture of {kind} failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            if self.mode == "on":
                raise MetaConfigError(f"graphs='on': {reason}; use graphs=auto (eager fallback) or off") from err
            self.stats.failed[kind] = reason
            if kind not in self._logged:
                self._logged.add(kind)
                log.warning("CUDA graphs: %s; %s steps run eagerly", reason, kind)
            return False
        finally:
            for opt, before in zip(optimizers, capturable):
                _set_capturable(opt, before)
        slot.grads = [(p, p.grad) for m in modules for p in m.parameters() if p.grad is not None]
        self.stats.captures += 1
        return True


def _plain(model, optimizer, kwargs, x1, x2) -> StepOutput:
    return plain_step(model, optimizer, x1, x2, **kwargs)


def _meta(model, cmw, optimizer, cmw_optimizer, step, config, x1, x2, m1=None, m2=None) -> StepOutput:
    return meta_step(model, cmw, optimizer, cmw_optimizer, x1, x2, m1, m2, step=step, config=config)


def _drop_grads(modules: Sequence[nn.Module]) -> None:
    for m in modules:
        for p in m.parameters():
            p.grad = None


def _shapes(tensors: Sequence[torch.Tensor]) -> tuple:
    return tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in tensors)


def _unsupported_setup(modules: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer]) -> str | None:
    if dist.is_distributed() or any(isinstance(m, nn.parallel.DistributedDataParallel) for m in modules):
        return "a distributed step (DDP's gradient reduction is not captured here)"
    for opt in optimizers:
        if type(opt) not in _OPTIMIZERS:
            return f"{type(opt).__name__} optimizer (graphs support SGD, Adam, AdamW)"
    return None


def _hashable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", value.data_ptr(), value.device)
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value


def _state_key(modules: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer]) -> tuple:
    """Everything host-side a captured step bakes in: storage of parameters, buffers and optimizer states,
    hyper-parameters, modes. A replay is exact only while this is unchanged."""
    key: list[Any] = []
    for module in modules:
        key.append(tuple(m.training for m in module.modules()))
        key.append(tuple((p.data_ptr(), p.requires_grad) for p in module.parameters()))
        key.append(tuple(b.data_ptr() for b in module.buffers()))
    for opt in optimizers:
        for group in opt.param_groups:
            key.append(tuple((k, _hashable(v)) for k, v in group.items() if k != "params"))
            for p in group["params"]:
                key.append(tuple((k, _hashable(v)) for k, v in opt.state.get(p, {}).items()))
    return tuple(key)


def _adam_step_on_device(opt: torch.optim.Optimizer) -> None:
    """Adam's step counters on the parameters' device, where a captured step increments them (an eager step
    reads them back as numbers; torch does the same when it loads a capturable state)."""
    if not isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
        return
    for p, state in opt.state.items():
        step = state.get("step")
        if isinstance(step, torch.Tensor) and step.device != p.device:
            state["step"] = step.to(p.device, torch.float32)


def _set_capturable(opt: torch.optim.Optimizer, value: bool) -> bool:
    """Set Adam's ``capturable`` flag (bias correction on the device, as a capture needs); returns the old one."""
    before = all(group.get("capturable", False) for group in opt.param_groups)
    if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
        for group in opt.param_groups:
            group["capturable"] = value
    return before


def _clone(out: StepOutput) -> StepOutput:
    return StepOutput(
        out.loss.clone(),
        None if out.weights is None else out.weights.clone(),
        None if out.meta_loss is None else out.meta_loss.clone(),
    )
