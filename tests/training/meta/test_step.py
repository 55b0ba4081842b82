"""The bi-level step: exact hypergradient, BN statistics, CMW-Net update order, interval, DDP (2 gloo ranks)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from timm_uscl.errors import USCLError
from timm_uscl.training.losses import nt_xent, weighted_mean
from timm_uscl.training.meta import (
    MetaConfigError,
    MetaOptimizerError,
    MetaStepConfig,
    cmw_optimizer,
    hypergradient,
    meta_step,
    plain_step,
)
from timm_uscl.training.meta.tangent import Tape, tangent
from timm_uscl.training.model import CMWNet, ContrastiveModel


class TinyCNN(nn.Sequential):
    num_features = 6

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, stride=2),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


def _setup(seed: int = 0, warm: bool = True, pairs: int = 4, **sgd):
    """float64 tiny model, CMW-Net, SGD (one warm-up step so momentum buffers exist) and 4 batches."""
    torch.manual_seed(seed)
    model = ContrastiveModel(TinyCNN(), feat_dim=5).double()
    cmw = CMWNet(2 * model.num_features).double()
    opt = torch.optim.SGD(model.parameters(), **{"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-2, **sgd})
    batches = [torch.randn(pairs, 3, 9, 9, dtype=torch.float64) for _ in range(4)]
    if warm:
        plain_step(model, opt, torch.randn_like(batches[0]), torch.randn_like(batches[0]))
    return model, cmw, opt, batches


def _copy_with_optimizer(model: nn.Module, opt: torch.optim.SGD):
    model = copy.deepcopy(model)
    new = torch.optim.SGD(model.parameters(), lr=0.0)
    new.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict would share the buffers
    return model, new


def _meta_loss_by_real_optimizer(model, cmw, opt, x1, x2, m1, m2) -> torch.Tensor:
    """The reference's recipe, on copies: weighted loss, a real SGD step, unweighted meta loss at θ'."""
    model, opt = _copy_with_optimizer(model, opt)
    n = x1.shape[0]
    h, z = model(torch.cat([x1, x2]))
    loss = weighted_mean(nt_xent(z[:n], z[n:], gather=False), cmw(h[:n], h[n:]), gather=False)
    opt.zero_grad()
    loss.backward()
    opt.step()
    _, zm = model(torch.cat([m1, m2]))
    return nt_xent(zm[:n], zm[n:], gather=False).mean()


def _hypergradient(model, cmw, opt, x1, x2, m1, m2, **config):
    """The hypergradient at the current state, by ``config["hypergrad"]`` (default: the linearised route)."""
    x = torch.cat([x1, x2])
    model, opt = _copy_with_optimizer(model, opt)  # this forward must not move the caller's BN statistics
    with Tape(model) as tape:
        h, z = model(x)
    return hypergradient(model, cmw, opt, x, h, z, m1, m2, MetaStepConfig(**config), tape)


@pytest.mark.parametrize(
    "sgd, warm",
    [
        ({"momentum": 0.0, "weight_decay": 0.0}, False),
        ({}, False),  # momentum on, buffer not created yet
        ({}, True),
        ({"nesterov": True}, True),
        ({"dampening": 0.3}, True),
    ],
    ids=["sgd", "first-step", "momentum-wd", "nesterov", "dampening"],
)
@pytest.mark.parametrize("route", ["linearised", "jvp"])
def test_hypergradient_matches_central_finite_differences(sgd, warm, route):
    model, cmw, opt, (x1, x2, m1, m2) = _setup(warm=warm, **sgd)
    grads, meta_loss = _hypergradient(model, cmw, opt, x1, x2, m1, m2, hypergrad=route)
    torch.testing.assert_close(meta_loss, _meta_loss_by_real_optimizer(model, cmw, opt, x1, x2, m1, m2).detach())

    params, eps = list(cmw.parameters()), 1e-5
    alpha = torch.nn.utils.parameters_to_vector(params).detach()
    for direction in torch.randn(3, alpha.numel(), dtype=torch.float64):  # directional central differences
        values = []
        for sign in (1, -1):
            torch.nn.utils.vector_to_parameters(alpha + sign * eps * direction, params)
            values.append(_meta_loss_by_real_optimizer(model, cmw, opt, x1, x2, m1, m2).detach())
        torch.nn.utils.vector_to_parameters(alpha, params)
        fd = (values[0] - values[1]) / (2 * eps)
        torch.testing.assert_close(torch.cat([g.flatten() for g in grads]) @ direction, fd, rtol=1e-6, atol=1e-10)


def test_the_three_exact_routes_agree():
    model, cmw, opt, batches = _setup()
    double, _ = _hypergradient(model, cmw, opt, *batches, hypergrad="double_backward")
    for route in ("linearised", "jvp", "auto"):
        torch.testing.assert_close(_hypergradient(model, cmw, opt, *batches, hypergrad=route)[0], double)


def test_linearised_route_needs_the_tape_and_auto_falls_back_without_it():
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    x = torch.cat([x1, x2])
    h, z = model(x)
    with pytest.raises(ValueError, match="Tape"):
        hypergradient(model, cmw, opt, x, h, z, m1, m2, MetaStepConfig(hypergrad="linearised"))
    auto, _ = hypergradient(model, cmw, opt, x, h, z, m1, m2)  # no tape: the JVP route
    torch.testing.assert_close(auto, _hypergradient(model, cmw, opt, x1, x2, m1, m2)[0])


class _GeluCNN(nn.Sequential):
    """A layer without a tangent rule (GELU): the linearised route cannot be exact here."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_meta_step_takes_the_linearised_route_where_it_is_exact_and_the_jvp_route_elsewhere(monkeypatch):
    from timm_uscl.training.meta import hypergrad

    calls = []
    monkeypatch.setattr(hypergrad, "tangent", lambda *a: calls.append(1) or tangent(*a))
    model, cmw, opt, batches = _setup()
    meta_step(model, cmw, opt, cmw_optimizer(cmw), *batches)
    assert calls == [1]

    torch.manual_seed(0)
    gelu = ContrastiveModel(_GeluCNN(), feat_dim=5).double()
    cmw = CMWNet(2 * gelu.num_features).double()
    opt = torch.optim.SGD(gelu.parameters(), lr=0.1, momentum=0.9)
    out = meta_step(gelu, cmw, opt, cmw_optimizer(cmw), *batches)  # auto: JVP route
    assert calls == [1] and torch.isfinite(out.meta_loss)
    with pytest.raises(MetaConfigError, match="GELU") as info:
        meta_step(gelu, cmw, opt, cmw_optimizer(cmw), *batches, config=MetaStepConfig(hypergrad="linearised"))
    assert isinstance(info.value, USCLError)


def test_lookahead_restriction_changes_only_what_it_says():
    model, cmw, opt, batches = _setup()
    exact, _ = _hypergradient(model, cmw, opt, *batches)
    everything, _ = _hypergradient(model, cmw, opt, *batches, lookahead=("backbone.", "head."))
    head_only, _ = _hypergradient(model, cmw, opt, *batches, lookahead=("head.",))
    torch.testing.assert_close(everything, exact)
    assert not torch.allclose(head_only[0], exact[0])


def test_bn_running_stats_are_updated_exactly_once_by_the_real_forward():
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    expected = copy.deepcopy(model)
    expected(torch.cat([x1, x2]))  # one train-mode forward of the real batch
    before = int(model.backbone[1].num_batches_tracked)
    meta_step(model, cmw, opt, cmw_optimizer(cmw), x1, x2, m1, m2)
    assert int(model.backbone[1].num_batches_tracked) == before + 1
    for (name, got), want in zip(model.named_buffers(), expected.buffers()):
        torch.testing.assert_close(got, want, msg=name)


def test_cmw_update_then_real_step_with_the_updated_weights():
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    copt = cmw_optimizer(cmw, lr=1e-2)
    ref_model, ref_opt = _copy_with_optimizer(model, opt)
    ref_cmw = copy.deepcopy(cmw)
    ref_copt = cmw_optimizer(ref_cmw, lr=1e-2)
    old_cmw = copy.deepcopy(cmw)

    out = meta_step(model, cmw, opt, copt, x1, x2, m1, m2)

    n, x = x1.shape[0], torch.cat([x1, x2])
    h, z = ref_model(x)
    grads, meta_loss = hypergradient(ref_model, ref_cmw, ref_opt, x, h, z, m1, m2)
    for p, g in zip(ref_cmw.parameters(), grads):
        p.grad = g
    ref_copt.step()
    for got, want in zip(cmw.parameters(), ref_cmw.parameters()):
        torch.testing.assert_close(got, want)
    weights = ref_cmw(h[:n], h[n:]).detach()
    torch.testing.assert_close(out.weights, weights)
    assert not torch.allclose(out.weights, old_cmw(h[:n], h[n:]))
    loss = weighted_mean(nt_xent(z[:n], z[n:]), weights)
    ref_opt.zero_grad()
    loss.backward()
    ref_opt.step()
    torch.testing.assert_close(out.loss, loss.detach())
    torch.testing.assert_close(out.meta_loss, meta_loss)
    for got, want in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(got, want)


def test_interval_updates_cmw_every_k_iterations_and_weights_every_iteration():
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    copt = cmw_optimizer(cmw, lr=1e-2)
    config = MetaStepConfig(interval=3)
    updated = []
    for step in range(5):
        before = [p.clone() for p in cmw.parameters()]
        due = config.due(step)
        out = meta_step(model, cmw, opt, copt, x1, x2, *((m1, m2) if due else (None, None)), step=step, config=config)
        updated.append(not all(torch.equal(a, b) for a, b in zip(before, cmw.parameters())))
        assert (out.meta_loss is not None) == due and out.weights.shape == (4,)
    assert updated == [True, False, False, True, False]
    with pytest.raises(ValueError, match="meta batch"):
        meta_step(model, cmw, opt, copt, x1, x2, step=6, config=config)


def test_non_sgd_optimizer_is_refused_with_a_clear_error():
    model, cmw, _, (x1, x2, m1, m2) = _setup(warm=False)
    opt = torch.optim.Adam(model.parameters())
    with pytest.raises(MetaOptimizerError, match="torch.optim.SGD") as info:
        meta_step(model, cmw, opt, cmw_optimizer(cmw), x1, x2, m1, m2)
    assert isinstance(info.value, USCLError)


def test_bf16_autocast_step_runs_and_returns_float32_tensors():
    model, cmw, opt, batches = _setup(warm=False)
    model.float()
    cmw.float()
    x1, x2, m1, m2 = (b.float() for b in batches)
    for route in ("double_backward", "jvp", "linearised"):
        out = meta_step(
            model, cmw, opt, cmw_optimizer(cmw), x1, x2, m1, m2, config=MetaStepConfig(autocast=True, hypergrad=route)
        )
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss) and torch.isfinite(out.meta_loss)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, cmw, opt, batches = _setup(warm=False, pairs=6)
    ddp = nn.parallel.DistributedDataParallel(model)
    local = [b[rank * 3 : (rank + 1) * 3] for b in batches]
    out = meta_step(ddp, cmw, opt, cmw_optimizer(cmw, lr=1e-2), *local)
    torch.save(
        {"model": list(model.parameters()), "cmw": list(cmw.parameters()), "loss": out.loss, "weights": out.weights},
        f"{out_dir}/{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_the_single_process_recipe(tmp_path):
    """CMW-Net gets the mean of the ranks' local hypergradients; the real step is the global weighted loss."""
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]

    model, cmw, opt, batches = _setup(warm=False, pairs=6)
    copt = cmw_optimizer(cmw, lr=1e-2)
    local = [[b[r * 3 : (r + 1) * 3] for b in batches] for r in range(2)]
    per_rank = [_hypergradient(model, cmw, opt, *local[r])[0] for r in range(2)]
    for p, g0, g1 in zip(cmw.parameters(), *per_rank):
        p.grad = (g0 + g1) / 2
    copt.step()
    outs = [model(torch.cat(local[r][:2])) for r in range(2)]  # BN sees each rank's batch, as under DDP
    h1, h2, z1, z2 = (torch.cat([o[i][j * 3 : (j + 1) * 3] for o in outs]) for i, j in [(0, 0), (0, 1), (1, 0), (1, 1)])
    weights = cmw(h1, h2).detach()
    loss = weighted_mean(nt_xent(z1, z2, gather=False), weights, gather=False)
    opt.zero_grad()
    loss.backward()
    opt.step()

    torch.testing.assert_close(torch.cat([r["weights"] for r in ranks]), weights)
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss.detach())
    for r in ranks:
        for got, want in zip(r["cmw"], cmw.parameters()):
            torch.testing.assert_close(got, want.detach())
        for got, want in zip(r["model"], model.parameters()):
            torch.testing.assert_close(got, want.detach())
