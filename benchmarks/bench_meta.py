"""Cost of the Meta-USCL step against a plain SimCLR step, measured in the same run.

Variants (one model copy each, same init, interleaved round-robin so that load drift hits all of them); every
variant forwards each view apart (``bn_views="per_view"``, the reference's BatchNorm batching and the default)
unless its name ends in ``-joint`` (both views as one BatchNorm batch):
  plain        `plain_step` (the baseline of every ratio)
  plain-joint  `plain_step`, joint (the baseline of meta-joint)
  meta         `meta_step`, exact, default route (linearised tangent pass over the real forwards' activations)
  meta-joint   `meta_step`, exact, default route, joint
  meta-jvp     `meta_step`, exact, forward-mode ``torch.func.jvp`` (recomputes the primal forward)
  meta-dbl     `meta_step`, exact, double backward through the reused forward
  naive        the textbook functional_call lookahead: separate virtual forward, create_graph, θ'(α) graph,
               meta backward into α, then a separate real forward/backward
  approx       `meta_step` with the lookahead restricted to ``--approx-prefixes`` (APPROXIMATION); its accuracy
               is the cosine similarity of its α-gradient with the exact one on the same state
  *-graphs     with ``--graphs`` (CUDA): plain, meta and meta-joint replayed as CUDA graphs (`StepGraphs`), the
               warm-up steps (eager, then the capture) excluded from the measured ones

Peak memory (``--memory``): CUDA max_memory_allocated per variant; on CPU the process's peak RSS (VmHWM, reset
through /proc/self/clear_refs) minus the RSS before the step, with glibc's mmap threshold lowered so freed tensors go
back to the OS (the script re-executes itself with MALLOC_MMAP_THRESHOLD_ set). That threshold makes every large
tensor a fresh mmap with its page faults, so it slows the steps (0.33 s -> 0.49 s for a bf16 plain step on the 2-core
box): speed and memory are measured in separate runs, speed without it.

Roofline (``--roofline``): the machine's convolution peak, fp32 and bf16 (autocast), measured here on large 3x3
convolutions at the same thread count, and each variant's achieved FLOP/s (its FLOPs counted once by
``torch.utils.flop_counter.FlopCounterMode``, divided by its median wall time) as a fraction of the peak of the
precision it ran in.

    python benchmarks/bench_meta.py --sizes 64 112                       # CPU
    python benchmarks/bench_meta.py --sizes 64 --threads 2 --bf16 --channels-last --roofline --skip naive approx
    python benchmarks/bench_meta.py --device cuda --bf16 --channels-last --sizes 64 112 224
    python benchmarks/bench_meta.py --device cuda --sizes 64 --graphs --skip meta-jvp meta-dbl approx naive
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
from timm_uscl.training.meta import MetaStepConfig, StepGraphs, cmw_optimizer, hypergradient, meta_step, plain_step
from timm_uscl.training.meta.forward import bn_batches
from timm_uscl.training.meta.tangent import Tape
from timm_uscl.training.model import CMWNet, ContrastiveModel


def _views(fn, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn`` on each BatchNorm batch of the pair (per_view: each view alone), outputs concatenated, float32."""
    outs = [fn(x) for x in bn_batches(a, b, "per_view")]
    return torch.cat([o[0] for o in outs]).float(), torch.cat([o[1] for o in outs]).float()


def naive_step(model, cmw, opt, copt, x1, x2, m1, m2, autocast: bool, temperature: float = 0.5) -> None:
    """The straightforward exact lookahead (Meta-Weight-Net / reference structure, with functional_call),
    each view forwarded apart as in the reference."""
    n, dev = x1.shape[0], x1.device.type
    params = dict(model.named_parameters())
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    with torch.autocast(dev, torch.bfloat16, enabled=autocast):
        h, z = _views(lambda x: functional_call(model, (params, buffers), (x,)), x1, x2)
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
        _, zm = _views(lambda x: functional_call(model, (theta, buffers), (x,)), m1, m2)
    meta = nt_xent(zm[:n], zm[n:], temperature, False).mean()
    copt.zero_grad(set_to_none=True)
    meta.backward(inputs=list(cmw.parameters()))
    copt.step()
    with torch.autocast(dev, torch.bfloat16, enabled=autocast):
        h, z = _views(model, x1, x2)
    with torch.no_grad():
        w = cmw(h[:n], h[n:])
    loss = weighted_mean(nt_xent(z[:n], z[n:], temperature), w)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _plain_variant(model, opt, bf16: bool, bn_views: str, step, b: list[torch.Tensor]) -> None:
    step(model, opt, b[0], b[1], autocast=bf16, bn_views=bn_views)


def _naive_variant(model, cmw, opt, copt, bf16: bool, b: list[torch.Tensor]) -> None:
    naive_step(model, cmw, opt, copt, b[0], b[1], b[2], b[3], bf16)


def _meta_variant(model, cmw, opt, copt, config: MetaStepConfig, step, b: list[torch.Tensor]) -> None:
    step(model, cmw, opt, copt, *b, config=config)


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


def conv_peak(device: torch.device, bf16: bool, seconds: float = 2.0) -> float:
    """Peak FLOP/s of large 3x3 convolutions (channels_last, forward, no grad), best over a few shapes."""
    best = 0.0
    for n, c, hw in ((64, 256, 16), (32, 128, 32), (16, 512, 8)):
        x = torch.randn(n, c, hw, hw, device=device).contiguous(memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device).to(memory_format=torch.channels_last)
        flops = 2.0 * n * c * c * 9 * hw * hw
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            conv(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 3:
                conv(x)
                calls += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, flops * calls / (time.perf_counter() - start))
    return best


def step_flops(fn: Callable[[], None]) -> float:
    """FLOPs of one call (matmuls and convolutions, forward and backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _variants(base, base_cmw, args: argparse.Namespace):
    """Each variant's step on its own copy of the same model: name -> (step on a batch list, (model, cmw, opt))."""
    configs = {
        "meta": MetaStepConfig(autocast=args.bf16),
        "meta-joint": MetaStepConfig(autocast=args.bf16, bn_views="joint"),
        "meta-jvp": MetaStepConfig(autocast=args.bf16, hypergrad="jvp"),
        "meta-dbl": MetaStepConfig(autocast=args.bf16, hypergrad="double_backward"),
        "approx": MetaStepConfig(autocast=args.bf16, lookahead=tuple(args.approx_prefixes)),
    }
    names = ["plain", "plain-joint", *configs, "naive"]
    if args.graphs:
        names += ["plain-graphs", "meta-graphs", "meta-joint-graphs"]
    variants: dict[str, Callable[[list[torch.Tensor]], None]] = {}
    states, graph_runs = {}, {}
    for name in names:
        if name in args.skip:
            continue
        model, cmw = copy.deepcopy(base), copy.deepcopy(base_cmw)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        copt = cmw_optimizer(cmw)
        states[name] = (model, cmw, opt)
        base_name = name.removesuffix("-graphs")
        graphs = StepGraphs("auto", warmup=2) if name.endswith("-graphs") else None  # auto: a failure is printed
        if graphs is not None:
            graph_runs[name] = graphs
        if base_name.startswith("plain"):
            bn_views = "joint" if base_name == "plain-joint" else "per_view"
            step = graphs.plain_step if graphs is not None else plain_step
            variants[name] = functools.partial(_plain_variant, model, opt, args.bf16, bn_views, step)
        elif name == "naive":
            variants[name] = functools.partial(_naive_variant, model, cmw, opt, copt, args.bf16)
        else:
            step = graphs.meta_step if graphs is not None else meta_step
            variants[name] = functools.partial(_meta_variant, model, cmw, opt, copt, configs[base_name], step)
    return variants, states, configs, graph_runs


def run(size: int, args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the trainer; the warm-up rounds absorb the tuning
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    base = ContrastiveModel(args.model).to(device).to(memory_format=fmt)
    base_cmw = CMWNet(2 * base.num_features).to(device)

    def batch() -> torch.Tensor:
        return torch.randn(args.batch, 3, size, size, device=device).contiguous(memory_format=fmt)

    variants, states, configs, graph_runs = _variants(base, base_cmw, args)
    warmup = max(args.warmup, 3) if args.graphs else args.warmup  # graphs: 2 eager steps, then the capture
    walls: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, float] = {k: 0.0 for k in variants}
    for i in range(warmup + args.steps):
        b = [batch() for _ in range(4)]
        for name, fn in variants.items():
            wall, cpu, peak = measure(functools.partial(fn, b), device)
            if i >= warmup:
                walls[name].append(wall)
                cpus[name].append(cpu)
                # a CPU RSS peak means something only with --memory (freed tensors returned to the OS)
                peaks[name] = max(peaks[name], peak) if args.memory or device.type == "cuda" else float("nan")

    med = {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in variants}
    _report(size, args, med, walls, peaks)
    if args.roofline:
        _roofline(variants, med, device, args, [batch() for _ in range(4)])
    for name, graphs in graph_runs.items():  # every measured step must be a replay, else the figure is eager's
        print(f"{name}: {graphs.stats.captures} capture(s), {graphs.stats.replays} replays, {graphs.stats.eager} eager")
        if graphs.stats.reason is not None or graphs.stats.failed:
            print(f"  {name} ran eagerly: {graphs.stats.reason} {graphs.stats.failed or ''}")
    if "meta" in states:
        model, cmw, opt = states["meta"]
        _accuracy(model, cmw, opt, [batch() for _ in range(4)], configs, args)


def _roofline(variants, med, device: torch.device, args: argparse.Namespace, b: list[torch.Tensor]) -> None:
    peak = conv_peak(device, args.bf16)
    precision = "bf16" if args.bf16 else "fp32"
    print(f"convolution peak ({precision}, {torch.get_num_threads()} threads): {peak / 1e9:.1f} GFLOP/s")
    for name, fn in variants.items():
        if name.endswith("-graphs"):  # a capture under the counter would not count the replayed kernels
            continue
        flops = step_flops(functools.partial(fn, b))
        achieved = flops / med[name][0]
        print(
            f"{name:18s} {flops / 1e9:8.1f} GFLOP/step  {achieved / 1e9:7.1f} GFLOP/s  {100 * achieved / peak:5.1f} % "
            f"of the {precision} convolution peak"
        )


def _report(size: int, args: argparse.Namespace, med, walls, peaks) -> None:
    plain = med.get("plain", (float("nan"), float("nan")))
    print(
        f"\n{args.model} {size}x{size}, {args.batch} pairs, {args.device}, bf16={args.bf16}, "
        f"channels_last={args.channels_last}, threads={torch.get_num_threads()}, median of {args.steps}"
    )
    print(
        f"{'variant':18s} {'wall ms':>8s} {'ratio':>6s} {'cpu ms':>8s} {'ratio':>6s} {'pairs/s':>8s} {'peak MiB':>9s}"
        "  wall ms per step"
    )
    for name, (wall, cpu) in med.items():
        print(
            f"{name:18s} {1e3 * wall:8.1f} {wall / plain[0]:6.2f} {1e3 * cpu:8.1f} {cpu / plain[1]:6.2f} "
            f"{args.batch / wall:8.1f} {peaks[name]:9.0f}  " + " ".join(f"{1e3 * t:.1f}" for t in walls[name])
        )
    for meta, base in [("meta", "plain"), ("meta-joint", "plain-joint"), ("meta-graphs", "plain-graphs")]:
        if meta in med and base in med:
            print(
                f"{meta} / {base}: {med[meta][1] / med[base][1]:.2f} (CPU time), {med[meta][0] / med[base][0]:.2f} "
                "(wall)"
            )
    for graphed in ("plain-graphs", "meta-graphs", "meta-joint-graphs"):
        eager = graphed.removesuffix("-graphs")
        if graphed in med and eager in med:
            print(f"{graphed}: {1e3 * med[graphed][0]:.2f} ms wall, {med[eager][0] / med[graphed][0]:.2f}x eager")


def _accuracy(model, cmw, opt, b: list[torch.Tensor], configs: dict[str, MetaStepConfig], args) -> None:
    """On one shared state: each route's α-gradient against the full-precision JVP route, and the two BatchNorm
    batchings against each other (how far apart the two algorithms are)."""
    device = b[0].device

    def alpha_gradient(cfg: MetaStepConfig) -> torch.Tensor:
        tapes, outs = [], []
        for x in bn_batches(b[0], b[1], cfg.bn_views):
            with Tape(model) as tape, torch.autocast(device.type, torch.bfloat16, enabled=cfg.autocast):
                outs.append(model(x))
            tapes.append(tape)
        h, z = (torch.cat([o[i] for o in outs]).float() for i in range(2))
        grads, _ = hypergradient(model, cmw, opt, (b[0], b[1]), h, z, (b[2], b[3]), cfg, tapes)
        return torch.cat([g.flatten() for g in grads])

    def compare(name: str, got: torch.Tensor, reference: torch.Tensor, note: str = "") -> None:
        cos = torch.nn.functional.cosine_similarity(got, reference, dim=0)
        print(f"{name}: cosine {cos:.4f}, norm ratio {got.norm() / reference.norm():.4f}{note}")

    reference = alpha_gradient(MetaStepConfig(hypergrad="jvp"))
    for name in ("meta", "meta-dbl", "approx"):
        if name in configs and name not in args.skip:
            note = f" (prefixes {', '.join(args.approx_prefixes)})" if name == "approx" else ""
            compare(f"{name} vs exact fp32 alpha-gradient", alpha_gradient(configs[name]), reference, note)
    joint = alpha_gradient(MetaStepConfig(hypergrad="jvp", bn_views="joint"))
    compare("joint vs per_view exact fp32 alpha-gradient (two algorithms)", joint, reference)


def main() -> None:
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
    p.add_argument("--graphs", action="store_true", help="add plain, meta and meta-joint as CUDA graphs (CUDA)")
    p.add_argument("--memory", action="store_true", help="measure peak memory (slows CPU steps: module docstring)")
    p.add_argument("--roofline", action="store_true", help="convolution peak and each variant's share of it")
    args = p.parse_args()
    if args.memory and sys.platform == "linux" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    if args.threads:
        torch.set_num_threads(args.threads)
    for size in args.sizes:
        run(size, args)


if __name__ == "__main__":
    main()
