"""NT-Xent per anchor, pair-weight normalisation and the distributed gather (2 gloo processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from timm_uscl.training.losses import normalize_pair_weights, nt_xent, weighted_mean


def _reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Anchor by anchor: -log(exp(s_pos / t) / sum_{j != k} exp(s_kj / t)) over the 2N rows."""
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    out = []
    for k in range(n2):
        sims = torch.stack([F.cosine_similarity(z[k], z[j], dim=0) for j in range(n2)]) / temperature
        pos = (k + n2 // 2) % n2
        others = torch.cat([sims[:k], sims[k + 1 :]])
        out.append(-(sims[pos] - torch.logsumexp(others, dim=0)))
    return torch.stack(out)


def _lightly_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """lightly's NTXentLoss layout: logits [01|00] and [10|11] with the self-similarity diagonals removed."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    keep = ~torch.eye(n, dtype=torch.bool)
    l00 = (z1 @ z1.T / temperature)[keep].view(n, n - 1)
    l11 = (z2 @ z2.T / temperature)[keep].view(n, n - 1)
    logits = torch.cat([torch.cat([z1 @ z2.T / temperature, l00], 1), torch.cat([z2 @ z1.T / temperature, l11], 1)])
    labels = torch.arange(n).repeat(2)
    return F.cross_entropy(logits, labels, reduction="none")


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_matches_references_and_their_gradients(temperature):
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    losses = nt_xent(z1, z2, temperature)
    assert losses.shape == (10,) and losses.dtype == torch.float64
    torch.testing.assert_close(losses, _reference_nt_xent(z1, z2, temperature))
    torch.testing.assert_close(losses, _lightly_nt_xent(z1, z2, temperature))

    weights = torch.rand(10, dtype=torch.float64)  # a non-uniform cotangent exercises every row's gradient

    def grad_of(f):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        return torch.autograd.grad((f(a, b, temperature) * weights).sum(), (a, b))

    torch.testing.assert_close(grad_of(nt_xent), grad_of(_reference_nt_xent))


def test_nt_xent_half_precision_input_gives_float32():
    z = torch.randn(4, 8, dtype=torch.bfloat16)
    assert nt_xent(z, z.flip(0)).dtype == torch.float32


def test_pair_weights_shared_by_both_directions_and_normalised():
    w = torch.tensor([0.2, 0.5, 0.3, 1.0], dtype=torch.float64)
    full = normalize_pair_weights(w)
    assert full.shape == (8,)
    torch.testing.assert_close(full.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(full[:4], full[4:])
    losses = torch.rand(8, dtype=torch.float64)
    torch.testing.assert_close(weighted_mean(losses, w), weighted_mean(losses, 7.0 * w))  # only ratios matter
    torch.testing.assert_close(weighted_mean(losses, torch.ones(4, dtype=torch.float64)), losses.mean())
    torch.testing.assert_close(weighted_mean(losses), losses.mean())


def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    z1, z2, w = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64), torch.rand(6)
    rows = slice(rank * 3, (rank + 1) * 3)
    a, b = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
    losses = nt_xent(a, b)
    loss = weighted_mean(losses, w[rows].double())
    loss.backward()
    torch.save({"losses": losses.detach(), "loss": loss.detach(), "ga": a.grad, "gb": b.grad}, f"{out_dir}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_two_gloo_processes_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]

    torch.manual_seed(0)
    z1, z2, w = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64), torch.rand(6)
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    losses = nt_xent(a, b, gather=False)
    loss = weighted_mean(losses, w.double(), gather=False)
    loss.backward()

    assert a.grad is not None and b.grad is not None
    for r, out in enumerate(ranks):
        rows = slice(r * 3, (r + 1) * 3)
        torch.testing.assert_close(out["losses"], torch.cat([losses[:6][rows], losses[6:][rows]]).detach())
        # each rank returns world_size x its share, and DDP averages: the gradient of the global loss
        torch.testing.assert_close(out["ga"] / 2, a.grad[rows])
        torch.testing.assert_close(out["gb"] / 2, b.grad[rows])
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss.detach())
