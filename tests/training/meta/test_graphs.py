"""The steps as CUDA graphs: eager fallback and bookkeeping on the CPU (through a stand-in of the device backend
that replays by re-running the step on the static buffers), no host sync in any step, and on CUDA (skipped
without a device) graphs against eager."""

from __future__ import annotations

import copy
import logging
from types import SimpleNamespace

import pytest
import torch

from hostsync import no_host_sync
from nets import TinyCNN
from timm_uscl.errors import USCLError
from timm_uscl.training.meta import MetaConfigError, MetaStepConfig, StepGraphs, cmw_optimizer, meta_step, plain_step
from timm_uscl.training.meta import graphs as graphs_module
from timm_uscl.training.meta.config import StepOutput
from timm_uscl.training.model import CMWNet, ContrastiveModel


class ReplayByRerun:
    """The device backend's contract on the CPU: ``capture`` runs nothing and returns the static outputs (here
    they exist once the first replay ran), ``replay`` computes the step from the static inputs and overwrites the
    static outputs in place. What it cannot mimic: the ``.grad`` tensors a real graph writes."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.captured, self.replayed = fail, 0, 0

    def unsupported(self, tensors):
        return None

    def eager(self, fn):
        return fn()

    def capture(self, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
        self.captured += 1
        graph = {"fn": fn, "out": None}
        return graph, _Lazy(graph)

    def replay(self, graph):
        self.replayed += 1
        out = graph["fn"]()
        if graph["out"] is None:
            graph["out"] = out
        else:
            for static, new in zip(_tensors(graph["out"]), _tensors(out)):
                static.copy_(new)


class _Lazy(StepOutput):
    """Static outputs that exist once the first replay ran (a CUDA graph's exist at capture, unfilled)."""

    def __init__(self, graph) -> None:
        self._graph = graph

    def __getattribute__(self, name):
        if name in ("loss", "weights", "meta_loss"):
            return getattr(object.__getattribute__(self, "_graph")["out"], name)
        return object.__getattribute__(self, name)


def _tensors(out: StepOutput) -> list[torch.Tensor]:
    return [t for t in (out.loss, out.weights, out.meta_loss) if t is not None]


def _setup(seed: int = 0, pairs: int = 4):
    torch.manual_seed(seed)
    model = ContrastiveModel(TinyCNN(), feat_dim=5)
    cmw = CMWNet(2 * model.num_features)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    return model, cmw, opt, cmw_optimizer(cmw, lr=1e-2)


def _batches(steps: int, pairs: int = 4, size: int = 9) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(pairs, 3, size, size, generator=g) for _ in range(4)] for _ in range(steps)]


def _state(model, cmw) -> dict[str, torch.Tensor]:
    return {**model.state_dict(), **{f"cmw.{k}": v for k, v in cmw.state_dict().items()}}


@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
def test_meta_steps_through_the_graph_bookkeeping_equal_eager_steps(bn_views):
    """Warm-up, capture, replays into static buffers, a new lr (recapture), a partial batch (eager): every
    returned output and the final state equal the eager steps'; outputs are not overwritten by later replays."""
    model, cmw, opt, copt = _setup()
    ref_model, ref_cmw = copy.deepcopy(model), copy.deepcopy(cmw)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    ref_copt = cmw_optimizer(ref_cmw, lr=1e-2)
    backend = ReplayByRerun()
    graphs = StepGraphs("auto", warmup=2, backend=backend)
    config = MetaStepConfig(bn_views=bn_views)
    batches = _batches(9) + [[b[:3] for b in _batches(1)[0]]]  # the last one: a partial batch of 3 pairs
    got, want = [], []
    for i, b in enumerate(batches):
        if i == 6:  # a new epoch's lr: a new graph
            for o in (opt, ref_opt):
                o.param_groups[0]["lr"] = 0.25
        got.append(graphs.meta_step(model, cmw, opt, copt, *b, step=i, config=config))
        want.append(meta_step(ref_model, ref_cmw, ref_opt, ref_copt, *b, step=i, config=config))
    for g, w in zip(got, want):
        for mine, eager in zip(_tensors(g), _tensors(w)):
            torch.testing.assert_close(mine, eager)
    torch.testing.assert_close(_state(model, cmw), _state(ref_model, ref_cmw))
    # steps 0-1 warm-up (step 0 creates the optimizers' states, so the state is steady from step 1 on),
    # 2 capture + replay, 3-5 replays, 6 new lr (eager), 7 capture + replay, 8 replay, 9 partial batch (eager)
    assert backend.captured == 2 and graphs.stats.captures == 2
    assert graphs.stats.replays == backend.replayed == 6
    assert graphs.stats.eager == 4 and "shapes" in graphs.stats.reason


def test_plain_steps_through_the_graph_bookkeeping_equal_eager_steps():
    model, _, opt, _ = _setup()
    ref_model = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    graphs = StepGraphs("on", warmup=1, backend=ReplayByRerun())
    for b in _batches(5):
        got = graphs.plain_step(model, opt, b[0], b[1], temperature=0.3)
        want = plain_step(ref_model, ref_opt, b[0], b[1], temperature=0.3)
        torch.testing.assert_close(got.loss, want.loss)
    torch.testing.assert_close(model.state_dict(), ref_model.state_dict())
    assert graphs.stats.captures == 1 and graphs.stats.replays == 3 and graphs.stats.reason is None


def test_a_replaced_optimizer_state_is_captured_anew():
    """Loading an optimizer state (a resume) replaces the momentum buffers a graph reads: never replay it."""
    model, cmw, opt, copt = _setup()
    graphs = StepGraphs("auto", warmup=1, backend=ReplayByRerun())
    batches = _batches(6)
    for b in batches[:3]:
        graphs.plain_step(model, opt, b[0], b[1])
    assert graphs.stats.captures == 1
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for b in batches[3:]:
        graphs.plain_step(model, opt, b[0], b[1])
    assert graphs.stats.captures == 2 and graphs.stats.replays == 3


def test_cpu_steps_run_eagerly_under_auto_and_are_refused_under_on():
    model, cmw, opt, copt = _setup()
    ref_model, ref_cmw = copy.deepcopy(model), copy.deepcopy(cmw)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    b = _batches(1)[0]
    graphs = StepGraphs("auto")
    out = graphs.meta_step(model, cmw, opt, copt, *b)
    want = meta_step(ref_model, ref_cmw, ref_opt, cmw_optimizer(ref_cmw, lr=1e-2), *b)
    torch.testing.assert_close(out.loss, want.loss)
    torch.testing.assert_close(_state(model, cmw), _state(ref_model, ref_cmw))
    assert graphs.stats.eager == 1 and "CUDA device" in graphs.stats.reason
    with pytest.raises(MetaConfigError, match="graphs=auto or off") as info:
        StepGraphs("on").plain_step(model, opt, b[0], b[1])
    assert isinstance(info.value, USCLError) and "\n" not in str(info.value)
    off = StepGraphs("off", backend=ReplayByRerun())
    off.plain_step(model, opt, b[0], b[1])
    assert off.stats.reason == "graphs=off" and off.backend.captured == 0


def test_an_unknown_graphs_mode_is_refused():
    with pytest.raises(MetaConfigError, match="auto"):
        StepGraphs("yes")


def test_a_failed_capture_keeps_that_step_eager_under_auto_and_raises_under_on(caplog):
    model, _, opt, _ = _setup()
    ref_model = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    graphs = StepGraphs("auto", warmup=1, backend=ReplayByRerun(fail=True))
    with caplog.at_level(logging.WARNING):
        for b in _batches(4):
            torch.testing.assert_close(
                graphs.plain_step(model, opt, b[0], b[1]).loss, plain_step(ref_model, ref_opt, b[0], b[1]).loss
            )
    torch.testing.assert_close(model.state_dict(), ref_model.state_dict())
    assert graphs.stats.eager == 4 and "capture of plain failed" in graphs.stats.reason
    assert sum("capture of plain failed" in r.message for r in caplog.records) == 1  # said once
    on = StepGraphs("on", warmup=1, backend=ReplayByRerun(fail=True))
    with pytest.raises(MetaConfigError, match=r"stream is capturing\); use graphs=auto"):
        for b in _batches(3):
            on.plain_step(model, opt, b[0], b[1])


def test_distributed_steps_and_other_optimizers_run_eagerly(monkeypatch):
    model, _, _, _ = _setup()
    b = _batches(1)[0]
    graphs = StepGraphs("auto", backend=ReplayByRerun())
    graphs.plain_step(model, torch.optim.RMSprop(model.parameters()), b[0], b[1])
    assert "RMSprop" in graphs.stats.reason
    monkeypatch.setattr(graphs_module, "dist", SimpleNamespace(is_distributed=lambda: True))  # graphs' view only
    graphs.plain_step(model, torch.optim.SGD(model.parameters(), lr=0.1), b[0], b[1])
    assert "distributed" in graphs.stats.reason and graphs.backend.captured == 0


@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
@pytest.mark.parametrize("route", ["linearised", "jvp", "double_backward"])
def test_no_step_makes_the_host_wait_for_the_device(bn_views, route):
    """A captured graph cannot contain a host sync: none in the plain step or in any route of the meta step
    (checked on the CPU by dispatch; CMW-Net's optimizer is SGD here, Adam runs capturable on CUDA)."""
    model, cmw, opt, _ = _setup()
    copt = torch.optim.SGD(cmw.parameters(), lr=0.1)
    b = _batches(2)
    config = MetaStepConfig(bn_views=bn_views, hypergrad=route)
    meta_step(model, cmw, opt, copt, *b[0], config=config)  # momentum buffers exist, as after warm-up
    with no_host_sync():
        meta_step(model, cmw, opt, copt, *b[1], config=config)
        plain_step(model, opt, b[1][0], b[1][1], bn_views=bn_views)


# ------------------------------------------------------------------------------------------------ CUDA only

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU path of the graphs)")


def _cuda_setup(arch: str = "resnet18", optimizer: str = "sgd"):
    torch.manual_seed(0)
    model = ContrastiveModel(arch, feat_dim=16).cuda()
    cmw = CMWNet(2 * model.num_features).cuda()
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-4)
    return model, cmw, opt, cmw_optimizer(cmw, lr=1e-3)


def _cuda_pairs(steps: int, pairs: int = 8, size: int = 32) -> list[list[torch.Tensor]]:
    g = torch.Generator(device="cuda").manual_seed(1)
    return [[torch.randn(pairs, 3, size, size, device="cuda", generator=g) for _ in range(4)] for _ in range(steps)]


def _twin(model, cmw, opt, copt):
    """A copy of the model, CMW-Net and both optimizers (states included), for the eager reference."""
    model2, cmw2 = copy.deepcopy(model), copy.deepcopy(cmw)
    opt2 = type(opt)(model2.parameters(), lr=0.0)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    copt2 = cmw_optimizer(cmw2)
    copt2.load_state_dict(copy.deepcopy(copt.state_dict()))
    return model2, cmw2, opt2, copt2


@cuda
@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_meta_step_graphs_on_cuda_equal_eager(bn_views, autocast):
    model, cmw, opt, copt = _cuda_setup()
    ref = _twin(model, cmw, opt, copt)
    graphs = StepGraphs("on", warmup=2)
    config = MetaStepConfig(bn_views=bn_views, autocast=autocast)
    for i, b in enumerate(_cuda_pairs(7)):
        got = graphs.meta_step(model, cmw, opt, copt, *b, step=i, config=config)
        want = meta_step(*ref, *b, step=i, config=config)
        for a, w in zip(_tensors(got), _tensors(want)):
            torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_state(model, cmw), _state(ref[0], ref[1]), rtol=1e-4, atol=1e-5)
    assert graphs.stats.captures == 1 and graphs.stats.replays == 5 and graphs.stats.reason is None


@cuda
@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_plain_step_graphs_on_cuda_equal_eager_and_a_partial_batch_runs_eagerly(bn_views, optimizer):
    model, cmw, opt, copt = _cuda_setup(optimizer=optimizer)
    ref_model, _, ref_opt, _ = _twin(model, cmw, opt, copt)
    graphs = StepGraphs("on", warmup=2)
    batches = _cuda_pairs(6)
    batches.append([t[:5] for t in batches[0]])
    for b in batches:
        got = graphs.plain_step(model, opt, b[0], b[1], bn_views=bn_views)
        want = plain_step(ref_model, ref_opt, b[0], b[1], bn_views=bn_views)
        torch.testing.assert_close(got.loss, want.loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.state_dict(), ref_model.state_dict(), rtol=1e-4, atol=1e-5)
    for p, q in zip(model.parameters(), ref_model.parameters()):  # .grad: the last (eager) step's, as eager
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    assert graphs.stats.captures == 1 and graphs.stats.replays == 4 and "shapes" in graphs.stats.reason


@cuda
def test_a_new_lr_on_cuda_is_captured_anew_and_used():
    model, cmw, opt, copt = _cuda_setup()
    ref = _twin(model, cmw, opt, copt)
    graphs = StepGraphs("on", warmup=1)
    for i, b in enumerate(_cuda_pairs(8)):
        if i == 4:
            opt.param_groups[0]["lr"] = ref[2].param_groups[0]["lr"] = 0.02
        got = graphs.meta_step(model, cmw, opt, copt, *b, step=i)
        want = meta_step(*ref, *b, step=i)
        torch.testing.assert_close(got.loss, want.loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_state(model, cmw), _state(ref[0], ref[1]), rtol=1e-4, atol=1e-5)
    assert graphs.stats.captures == 2
