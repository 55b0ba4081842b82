"""Cost of the Meta-USCL step against a plain SimCLR step, measured in the same run.

Variants (one model copy each, same init, interleaved round-robin so that load drift hits all of them):
  plain        `plain_step` (the baseline of every ratio)
  meta         `meta_step`, exact, default route (linearised tangent pass over the real forward's activations)
  meta-jvp     `meta_step`, exact, forward-mode ``torch.func.jvp`` (recomputes the primal forward)
  meta-dbl     `meta_step`, exact, double backward through the reused forward
  naive        the textbook functional_call lookahead: separate virtual forward, create_graph, θ'(α) graph,
               meta backward into α, then a separate real forward/backward
  approx       `meta_step` with the lookahead restricted to ``--approx-prefixes`` (APPROXIMATION); its accuracy
               is the cosine similarity of its α-gradient with the exact one on the same state

Peak memory: CUDA max_memory_allocated per variant; on CPU the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs) minus the RSS before the step, with glibc's mmap threshold lowered so freed tensors go
back to the OS (the script re-executes itself with MALLOC_MMAP_THRESHOLD_ set).

    python benchmarks/bench_meta.py --sizes 64 112                       # CPU
    python benchmarks/bench_meta.py --device cuda --bf16 --channels-last --sizes 64 112 224
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.func import functional_call

from timm_uscl.training.losses import nt_xent, weighted_mean
from timm_uscl.training.meta import MetaStepConfig, cmw_optimizer, hypergradient, meta_step, plain_step
from timm_uscl.training.meta.tangent import Tape
from timm_uscl.training.model import CMWNet, ContrastiveModel


def naive_step(model, cmw, opt, copt, x1, x2, m1, m2, autocast: bool, temperature: float = 0.5) -> None:
    """The straightforward exact lookahead (Meta-Weight-Net / reference structure, with functional_call)."""
    n, dev = x1.shape[0], x1.device.type
    params = dict(model.named_parameters())
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    with torch.autocast(dev, torch.bfloat16, enabled=autocast):
        h, z = functional_call(model, (params, buffers), (torch.cat([x1, x2]),))
    h, z = h.float(), z.float()
    virtual = weighted_mean(nt_xent(z[:n], z[n:], temperature, False), cmw(h[:n], h[n:]), False)
    grads = torch.autograd.grad(virtual, list(params.values()), create_graph=True)
    group = opt.param_groups[0]
    theta = {}
    for (k, p), g in zip(params.items(), grads):
        d = g + group["weight_decay"] * p
        buf = opt.state.get(p, {}).get("momentum_buffer")
        theta[k] = p - group["lr"] * (d if buf is None else group["momentum"] * buf + d)
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    with torch.autocast(dev, torch.bfloat16, enabled=autocast):
        _, zm = functional_call(model, (theta, buffers), (torch.cat([m1, m2]),))
    meta = nt_xent(zm[:n].float(), zm[n:].float(), temperature, False).mean()
    copt.zero_grad(set_to_none=True)
    meta.backward(inputs=list(cmw.parameters()))
    copt.step()
    with torch.autocast(dev, torch.bfloat16, enabled=autocast):
        h, z = model(torch.cat([x1, x2]))
    with torch.no_grad():
        w = cmw(h[:n].float(), h[n:].float())
    loss = weighted_mean(nt_xent(z[:n].float(), z[n:].float(), temperature), w)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _plain_variant(model, opt, bf16: bool, b: list[torch.Tensor]) -> None:
    plain_step(model, opt, b[0], b[1], autocast=bf16)


def _naive_variant(model, cmw, opt, copt, bf16: bool, b: list[torch.Tensor]) -> None:
    naive_step(model, cmw, opt, copt, b[0], b[1], b[2], b[3], bf16)


def _meta_variant(model, cmw, opt, copt, config: MetaStepConfig, b: list[torch.Tensor]) -> None:
    meta_step(model, cmw, opt, copt, *b, config=config)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def measure(fn: Callable[[], None], device: torch.device) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, peak MiB) of one call. CPU time is what to compare on a shared
    machine with ``--threads 1``: other processes' load does not inflate it (wall time does)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _rss_kib("VmRSS:") * 1024
    t, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_kib("VmHWM:") * 1024 - base
    return time.perf_counter() - t, time.process_time() - cpu, peak / 2**20


def run(size: int, args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the trainer; the warm-up rounds absorb the tuning
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    base = ContrastiveModel(args.model).to(device, memory_format=fmt)
    base_cmw = CMWNet(2 * base.num_features).to(device)

    def batch() -> torch.Tensor:
        return torch.randn(args.batch, 3, size, size, device=device).contiguous(memory_format=fmt)

    exact = MetaStepConfig(autocast=args.bf16)
    configs = {
        "meta": exact,
        "meta-jvp": MetaStepConfig(autocast=args.bf16, hypergrad="jvp"),
        "meta-dbl": MetaStepConfig(autocast=args.bf16, hypergrad="double_backward"),
        "approx": MetaStepConfig(autocast=args.bf16, lookahead=tuple(args.approx_prefixes)),
    }
    variants: dict[str, Callable[[list[torch.Tensor]], None]] = {}
    states = {}
    for name in ["plain", *configs, "naive"]:
        if name in args.skip:
            continue
        model, cmw = copy.deepcopy(base), copy.deepcopy(base_cmw)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        copt = cmw_optimizer(cmw)
        states[name] = (model, cmw, opt)
        if name == "plain":
            variants[name] = functools.partial(_plain_variant, model, opt, args.bf16)
        elif name == "naive":
            variants[name] = functools.partial(_naive_variant, model, cmw, opt, copt, args.bf16)
        else:
            variants[name] = functools.partial(_meta_variant, model, cmw, opt, copt, configs[name])

    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, float] = {k: 0.0 for k in variants}
    for i in range(args.warmup + args.steps):
        b = [batch() for _ in range(4)]
        for name, fn in variants.items():
            wall, cpu, peak = measure(functools.partial(fn, b), device)
            if i >= args.warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
                peaks[name] = max(peaks[name], peak)

    med = {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in variants}
    plain = med.get("plain", (float("nan"), float("nan")))
    print(
        f"\n{args.model} {size}x{size}, {args.batch} pairs, {args.device}, bf16={args.bf16}, "
        f"channels_last={args.channels_last}, threads={torch.get_num_threads()}, median of {args.steps}"
    )
    print(
        f"{'variant':10s} {'wall ms':>8s} {'ratio':>6s} {'cpu ms':>8s} {'ratio':>6s} {'pairs/s':>8s} {'peak MiB':>9s}"
        "  wall ms per step"
    )
    for name, (wall, cpu) in med.items():
        print(
            f"{name:10s} {1e3 * wall:8.1f} {wall / plain[0]:6.2f} {1e3 * cpu:8.1f} {cpu / plain[1]:6.2f} "
            f"{args.batch / wall:8.1f} {peaks[name]:9.0f}  " + " ".join(f"{1e3 * t:.1f}" for t in walls[name])
        )

    if "meta" in states:  # accuracy on one shared state: routes against the full-precision JVP route
        model, cmw, opt = states["meta"]
        b = [batch() for _ in range(4)]
        x = torch.cat(b[:2])

        def alpha_gradient(cfg: MetaStepConfig) -> torch.Tensor:
            with Tape(model) as tape, torch.autocast(device.type, torch.bfloat16, enabled=cfg.autocast):
                h, z = model(x)
            grads, _ = hypergradient(model, cmw, opt, x, h.float(), z.float(), b[2], b[3], cfg, tape)
            return torch.cat([g.flatten() for g in grads])

        reference = alpha_gradient(MetaStepConfig(hypergrad="jvp"))
        for name, cfg in [("meta", exact), ("meta-dbl", configs["meta-dbl"]), ("approx", configs["approx"])]:
            if name in states:
                got = alpha_gradient(cfg)
                cos = torch.nn.functional.cosine_similarity(got, reference, dim=0)
                print(
                    f"{name} vs exact fp32 alpha-gradient: cosine {cos:.4f}, norm ratio "
                    f"{got.norm() / reference.norm():.4f}"
                    + (f" (prefixes {', '.join(args.approx_prefixes)})" if name == "approx" else "")
                )


def main() -> None:
    if sys.platform == "linux" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 112])
    p.add_argument("--batch", type=int, default=32, help="pairs per step (and per meta batch)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--approx-prefixes", nargs="+", default=["backbone.layer4.", "head."])
    p.add_argument("--skip", nargs="*", default=[], help="variants to leave out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for size in args.sizes:
        run(size, args)


if __name__ == "__main__":
    main()
