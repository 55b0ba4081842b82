"""The bi-level step: exact hypergradient, BN statistics, CMW-Net update order, interval, DDP (2 gloo ranks)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nets import TinyCNN
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
from timm_uscl.training.meta.forward import bn_batches, forward_batches
from timm_uscl.training.meta.tangent import Tape, tangent
from timm_uscl.training.model import CMWNet, ContrastiveModel


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


def _two_views(model, a, b, bn_views):
    """The forwards as the reference writes them: each view on its own (``per_view``: BatchNorm normalises each
    view with its own statistics), or both views as one batch (``joint``)."""
    if bn_views == "joint":
        return model(torch.cat([a, b]))
    (ha, za), (hb, zb) = model(a), model(b)
    return torch.cat([ha, hb]), torch.cat([za, zb])


def _meta_loss_by_real_optimizer(model, cmw, opt, x1, x2, m1, m2, bn_views="per_view") -> torch.Tensor:
    """The reference's recipe, on copies: weighted loss, a real SGD step, unweighted meta loss at θ'."""
    model, opt = _copy_with_optimizer(model, opt)
    n = x1.shape[0]
    h, z = _two_views(model, x1, x2, bn_views)
    loss = weighted_mean(nt_xent(z[:n], z[n:], gather=False), cmw(h[:n], h[n:]), gather=False)
    opt.zero_grad()
    loss.backward()
    opt.step()
    _, zm = _two_views(model, m1, m2, bn_views)
    return nt_xent(zm[:n], zm[n:], gather=False).mean()


def _hypergradient(model, cmw, opt, x1, x2, m1, m2, **config):
    """The hypergradient at the current state, by ``config["hypergrad"]`` (default: the linearised route), with
    one `Tape` per BatchNorm batch (the two views apart, or their concatenation)."""
    model, opt = _copy_with_optimizer(model, opt)  # these forwards must not move the caller's BN statistics
    settings = MetaStepConfig(**config)
    batches = [x1, x2] if settings.bn_views == "per_view" else [torch.cat([x1, x2])]
    tapes, outs = [], []
    for batch in batches:
        with Tape(model) as tape:
            outs.append(model(batch))
        tapes.append(tape)
    h, z = (torch.cat(parts) for parts in zip(*outs))
    return hypergradient(model, cmw, opt, (x1, x2), h, z, (m1, m2), settings, tapes)


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
@pytest.mark.parametrize("route", ["linearised", "jvp", "double_backward"])
@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
def test_hypergradient_matches_central_finite_differences(sgd, warm, route, bn_views):
    model, cmw, opt, (x1, x2, m1, m2) = _setup(warm=warm, **sgd)
    grads, meta_loss = _hypergradient(model, cmw, opt, x1, x2, m1, m2, hypergrad=route, bn_views=bn_views)
    reference = functools.partial(_meta_loss_by_real_optimizer, bn_views=bn_views)
    torch.testing.assert_close(meta_loss, reference(model, cmw, opt, x1, x2, m1, m2).detach())

    params, eps = list(cmw.parameters()), 1e-5
    alpha = torch.nn.utils.parameters_to_vector(params).detach()
    for direction in torch.randn(3, alpha.numel(), dtype=torch.float64):  # directional central differences
        values = []
        for sign in (1, -1):
            torch.nn.utils.vector_to_parameters(alpha + sign * eps * direction, params)
            values.append(reference(model, cmw, opt, x1, x2, m1, m2).detach())
        torch.nn.utils.vector_to_parameters(alpha, params)
        fd = (values[0] - values[1]) / (2 * eps)
        torch.testing.assert_close(torch.cat([g.flatten() for g in grads]) @ direction, fd, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
def test_the_three_exact_routes_agree(bn_views):
    model, cmw, opt, batches = _setup()
    double, _ = _hypergradient(model, cmw, opt, *batches, hypergrad="double_backward", bn_views=bn_views)
    for route in ("linearised", "jvp", "auto"):
        got, _ = _hypergradient(model, cmw, opt, *batches, hypergrad=route, bn_views=bn_views)
        torch.testing.assert_close(got, double)


def test_per_view_and_joint_batching_give_different_hypergradients():
    """The two BatchNorm batchings are different algorithms (the reference's is per_view), not a relabelling."""
    model, cmw, opt, batches = _setup()
    per_view, _ = _hypergradient(model, cmw, opt, *batches, bn_views="per_view")
    joint, _ = _hypergradient(model, cmw, opt, *batches, bn_views="joint")
    assert not torch.allclose(per_view[0], joint[0], rtol=1e-3)


def test_linearised_route_needs_the_tapes_and_auto_falls_back_without_them():
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    h, z = _two_views(model, x1, x2, "per_view")
    with pytest.raises(ValueError, match="Tape"):
        hypergradient(model, cmw, opt, (x1, x2), h, z, (m1, m2), MetaStepConfig(hypergrad="linearised"))
    auto, _ = hypergradient(model, cmw, opt, (x1, x2), h, z, (m1, m2))  # no tape: the JVP route
    torch.testing.assert_close(auto, _hypergradient(model, cmw, opt, x1, x2, m1, m2)[0])


def test_linearised_route_refuses_a_tape_count_that_is_not_one_per_batchnorm_batch():
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    with Tape(model) as tape:
        h, z = model(torch.cat([x1, x2]))  # one joint forward, but the config says per_view
    with pytest.raises(ValueError, match="one Tape per BatchNorm batch"):
        hypergradient(model, cmw, opt, (x1, x2), h, z, (m1, m2), MetaStepConfig(bn_views="per_view"), [tape])


class _GeluCNN(nn.Sequential):
    """A layer without a tangent rule (GELU): the linearised route cannot be exact here."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_meta_step_takes_the_linearised_route_where_it_is_exact_and_the_jvp_route_elsewhere(monkeypatch):
    from timm_uscl.training.meta import hypergrad

    calls = []

    def counted(*args):
        calls.append(1)
        return tangent(*args)

    monkeypatch.setattr(hypergrad, "tangent", counted)
    model, cmw, opt, batches = _setup()
    meta_step(model, cmw, opt, cmw_optimizer(cmw), *batches)
    assert calls == [1, 1]  # one tangent pass per BatchNorm batch (per_view: one per view)

    torch.manual_seed(0)
    gelu = ContrastiveModel(_GeluCNN(), feat_dim=5).double()
    cmw = CMWNet(2 * gelu.num_features).double()
    opt = torch.optim.SGD(gelu.parameters(), lr=0.1, momentum=0.9)
    out = meta_step(gelu, cmw, opt, cmw_optimizer(cmw), *batches)  # auto: JVP route
    assert calls == [1, 1] and torch.isfinite(out.meta_loss)
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


@pytest.mark.parametrize("bn_views, updates", [("per_view", 2), ("joint", 1)])
@pytest.mark.parametrize("route", ["linearised", "jvp", "double_backward"])
def test_bn_running_stats_are_updated_only_by_the_real_forwards(bn_views, updates, route):
    """per_view: twice per step, view 1 then view 2 (the reference's real step); joint: once, both views."""
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    expected = copy.deepcopy(model)
    _two_views(expected, x1, x2, bn_views)  # the train-mode forwards of the real batch
    before = int(model.backbone[1].num_batches_tracked)
    meta_step(model, cmw, opt, cmw_optimizer(cmw), x1, x2, m1, m2, config=MetaStepConfig(bn_views=bn_views))
    assert int(model.backbone[1].num_batches_tracked) == before + updates
    for (name, got), want in zip(model.named_buffers(), expected.buffers()):
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
def test_the_real_forwards_equal_the_reference_forwards_outputs_and_running_stats(bn_views):
    model, _, _, (x1, x2, _, _) = _setup()
    ref = copy.deepcopy(model)
    h, z = forward_batches(model, bn_batches(x1, x2, bn_views), autocast=False)
    want_h, want_z = _two_views(ref, x1, x2, bn_views)
    torch.testing.assert_close((h, z), (want_h, want_z), rtol=0, atol=0)
    torch.testing.assert_close(model.state_dict(), ref.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("bn_views, updates", [("per_view", 2), ("joint", 1)])
def test_plain_step_equals_its_recipe_of_separate_or_joint_forwards(bn_views, updates):
    """Outputs, loss, gradients, weights and BN running statistics of ``plain_step`` against the forwards
    written out by hand (``per_view``: two forwards, the reference's; ``joint``: one)."""
    model, _, opt, (x1, x2, _, _) = _setup()
    ref_model, ref_opt = _copy_with_optimizer(model, opt)
    before = int(model.backbone[1].num_batches_tracked)
    out = plain_step(model, opt, x1, x2, bn_views=bn_views)

    _, z = _two_views(ref_model, x1, x2, bn_views)
    loss = nt_xent(z[:4], z[4:]).mean()
    ref_opt.zero_grad()
    loss.backward()
    for (name, got), want in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(got.grad, want.grad, msg=name)
    ref_opt.step()
    torch.testing.assert_close(out.loss, loss.detach())
    assert int(model.backbone[1].num_batches_tracked) == before + updates
    for (name, got), want in zip(model.state_dict().items(), ref_model.state_dict().values()):
        torch.testing.assert_close(got, want, msg=name)


def test_plain_step_per_view_differs_from_joint():
    model, _, opt, (x1, x2, _, _) = _setup()
    joint_model, joint_opt = _copy_with_optimizer(model, opt)
    per_view = plain_step(model, opt, x1, x2, bn_views="per_view").loss
    joint = plain_step(joint_model, joint_opt, x1, x2, bn_views="joint").loss
    assert not torch.allclose(per_view, joint)


def test_per_view_is_the_default_batching():
    model, _, opt, (x1, x2, _, _) = _setup()
    ref_model, ref_opt = _copy_with_optimizer(model, opt)
    torch.testing.assert_close(
        plain_step(model, opt, x1, x2).loss, plain_step(ref_model, ref_opt, x1, x2, bn_views="per_view").loss
    )
    assert MetaStepConfig().bn_views == "per_view"


def test_an_unknown_bn_batching_is_refused_with_a_clear_error():
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    with pytest.raises(MetaConfigError, match="bn_views") as info:
        plain_step(model, opt, x1, x2, bn_views="per-view")
    assert isinstance(info.value, USCLError)
    with pytest.raises(MetaConfigError, match="per_view"):
        meta_step(model, cmw, opt, cmw_optimizer(cmw), x1, x2, m1, m2, config=MetaStepConfig(bn_views="views"))


@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
def test_cmw_update_then_real_step_with_the_updated_weights(bn_views):
    model, cmw, opt, (x1, x2, m1, m2) = _setup()
    copt = cmw_optimizer(cmw, lr=1e-2)
    ref_model, ref_opt = _copy_with_optimizer(model, opt)
    ref_cmw = copy.deepcopy(cmw)
    ref_copt = cmw_optimizer(ref_cmw, lr=1e-2)
    old_cmw = copy.deepcopy(cmw)
    config = MetaStepConfig(bn_views=bn_views)

    out = meta_step(model, cmw, opt, copt, x1, x2, m1, m2, config=config)

    n = x1.shape[0]
    h, z = _two_views(ref_model, x1, x2, bn_views)
    grads, meta_loss = hypergradient(ref_model, ref_cmw, ref_opt, (x1, x2), h, z, (m1, m2), config)
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
    for (name, got), want in zip(model.state_dict().items(), ref_model.state_dict().values()):
        torch.testing.assert_close(got, want, msg=name)


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


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str, bn_views: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, cmw, opt, batches = _setup(warm=False, pairs=6)
    ddp = nn.parallel.DistributedDataParallel(model)
    local = [b[rank * 3 : (rank + 1) * 3] for b in batches]
    out = meta_step(ddp, cmw, opt, cmw_optimizer(cmw, lr=1e-2), *local, config=MetaStepConfig(bn_views=bn_views))
    torch.save(
        {"model": list(model.parameters()), "cmw": list(cmw.parameters()), "loss": out.loss, "weights": out.weights},
        f"{out_dir}/{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("bn_views", ["per_view", "joint"])
def test_ddp_two_gloo_processes_match_the_single_process_recipe(tmp_path, bn_views):
    """CMW-Net gets the mean of the ranks' local hypergradients; the real step is the global weighted loss."""
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path), bn_views), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]

    model, cmw, opt, batches = _setup(warm=False, pairs=6)
    copt = cmw_optimizer(cmw, lr=1e-2)
    local = [[b[r * 3 : (r + 1) * 3] for b in batches] for r in range(2)]
    per_rank = [_hypergradient(model, cmw, opt, *local[r], bn_views=bn_views)[0] for r in range(2)]
    for p, g0, g1 in zip(cmw.parameters(), *per_rank):
        p.grad = (g0 + g1) / 2
    copt.step()
    outs = [_two_views(model, local[r][0], local[r][1], bn_views) for r in range(2)]  # BN sees each rank's batches
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
