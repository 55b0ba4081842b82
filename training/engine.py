"""The pretraining loop: data -> (meta) step -> checkpoints -> metrics -> export.

Runs on one process or under ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs). Rank 0 writes the run folder:

    <out_dir>/config.yaml        the resolved config
    <out_dir>/last.pt            the atomic checkpoint (every ``checkpoint_every`` steps and at epoch ends)
    <out_dir>/metrics.jsonl      one line per logged step
    <out_dir>/summary.json       final figures, including a hash of every rank's weights
    <out_dir>/plots/*.png        loss and lr curves, CMW-Net weight histograms per data source
    <out_dir>/export/            the Hub-ready backbone (see timm_uscl.hub.export), head and CMW-Net beside it
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from timm_uscl.errors import USCLError

from . import dist
from .checkpoint import CHECKPOINT_NAME, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .config import TrainConfig, save_config
from .data import DataConfig, PairDataModule
from .meta import MetaStepConfig, cmw_optimizer, meta_step, plain_step
from .model import CMWNet, ContrastiveModel
from .provenance import environment

__all__ = ["TrainingDivergedError", "RunResult", "pretrain", "lr_factor"]

log = logging.getLogger(__name__)


class TrainingDivergedError(USCLError):
    """The loss became NaN or infinite; the last good checkpoint is kept untouched."""


@dataclass
class RunResult:
    out_dir: Path
    export_dir: Path | None
    epochs: int
    steps: int
    final_loss: float
    weights_hash: str


def lr_factor(config: TrainConfig, epoch: int) -> float:
    """The per-epoch lr multiplier of the reference schedules."""
    warm, total = config.warmup_epochs, config.epochs
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "uscl":  # USCL: constant for `warm` epochs, then cosine over the whole run
        return 1.0 if epoch < warm else 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(total, 1)))
    if epoch < warm:  # Meta-USCL train.py:44-53: 0.1 + 0.9 exp(-5 (1 - e/warm)^2)
        return 0.1 + 0.9 * math.exp(-5 * (1 - epoch / warm) ** 2)
    return 0.5 * (1 + math.cos(math.pi * (epoch - warm) / max(total - warm, 1)))


def _device(config: TrainConfig) -> torch.device:
    if config.device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    if config.device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(config.device)


def _init_distributed(device: torch.device) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)


def data_config(config: TrainConfig) -> DataConfig:
    """The data part of a training config (TrainConfig extends DataConfig), with ~ expanded in the cache path."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(DataConfig)}
    values["cache_dir"] = str(Path(config.cache_dir).expanduser()) if config.cache_dir else None
    return DataConfig(**values)


def _weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _Metrics:
    """JSONL metrics on rank 0, optional TensorBoard, and CMW weights per source for the histograms."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.weights: dict[str, list[float]] = defaultdict(list)
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise USCLError("tensorboard=true needs the tensorboard package: pip install tensorboard") from err

            self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _plot(out_dir: Path, weights: dict[str, list[float]]) -> None:
    """Loss and lr curves from metrics.jsonl, and a histogram of CMW weights per data source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    steps = [r["step"] for r in records]
    for key in ("loss", "lr"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [r[key] for r in records])
        if key == "loss" and any("meta_loss" in r for r in records):
            meta = [(r["step"], r["meta_loss"]) for r in records if "meta_loss" in r]
            ax.plot(*zip(*meta), label="meta loss", alpha=0.7)
            ax.legend()
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        fig.tight_layout()
        fig.savefig(plots / f"{key}.png", dpi=100)
        plt.close(fig)
    if weights:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for source, values in sorted(weights.items()):
            ax.hist(values, bins=30, alpha=0.6, label=f"{source} (n={len(values)})")
        ax.set_xlabel("CMW-Net weight (raw sigmoid)")
        ax.set_ylabel("pairs")
        ax.set_title("CMW-Net weights, last epoch")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots / "cmw_weights.png", dpi=100)
        plt.close(fig)


def _is_table_data(source: str, datasets: tuple[str, ...]) -> bool:
    """A Hub id listed for the tag, or a local copy of it (a folder named like the dataset)."""
    def norm(name: str) -> str:
        return name.rsplit("/", 1)[-1].lower().replace("-", "_")

    return source in datasets or norm(str(Path(source))) in {norm(d) for d in datasets}


def _export(config: TrainConfig, model: ContrastiveModel, cmw: CMWNet | None, out_dir: Path) -> Path:
    from timm_uscl import export, get_weights

    entry = get_weights(config.export_tag)
    size = (3, config.image_size, config.image_size)
    stats = ((config.mean,) * 3, (config.std,) * 3)
    if entry.input_size != size or (entry.mean, entry.std) != stats:
        log.warning("run differs from %s (input %s, mean/std %s): the export records the run's values",
                    entry.name, size, stats)
        entry = dataclasses.replace(entry, input_size=size, mean=stats[0], std=stats[1])
    sources = [config.source] if isinstance(config.source, str) else list(config.source)
    if not all(_is_table_data(s, entry.datasets) for s in sources):  # never claim data the run did not see
        log.warning("run data %s is not %s's: the export names the run's data instead", sources, entry.name)
        entry = dataclasses.replace(
            entry, pretrain_data=", ".join(sources), datasets=(),
            pretrain_data_license="that of the data named above (not checked by the trainer): check it before sharing",
        )
    extra = {"projection_head.safetensors": model.head.state_dict()}
    if cmw is not None:
        extra["cmw_net.safetensors"] = cmw.state_dict()
    return export(model.backbone, out_dir / "export", entry, extra_files=extra)


def _any_rank(flag: torch.Tensor, world: int) -> bool:
    """A boolean flag OR-ed over ranks, so every rank stops together (one rank raising alone would hang DDP)."""
    if world > 1:
        flag = flag.to(torch.int32)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
    return bool(flag)


def _next_on_every_rank(batches, device: torch.device, world: int):
    """The next batch, or None once ANY rank has run out: DDP ranks must take the same number of steps
    (files are sharded, so ranks can hold a different number of videos)."""
    batch = next(batches, None)
    if world > 1:
        have = torch.tensor(int(batch is not None), device=device)
        torch_dist.all_reduce(have, op=torch_dist.ReduceOp.MIN)
        if not bool(have):
            return None
    return batch


def pretrain(config: TrainConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Run (or resume) a pretraining job as configured; returns where everything was written."""
    device = _device(config)
    _init_distributed(device)
    rank, world = dist.rank(), dist.world_size()
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_config(config, out_dir / "config.yaml")
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    import timm_uscl  # noqa: F401  (registers the plugin's architectures)

    core = ContrastiveModel(config.arch, feat_dim=config.proj_dim).to(device)
    if config.channels_last:
        core = core.to(memory_format=torch.channels_last)
    cmw = CMWNet(2 * core.num_features).to(device) if config.meta else None
    model: torch.nn.Module = core
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile and not config.meta:  # never compile through the double backward
        model = torch.compile(model)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(core.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(config, e))
    cmw_opt = cmw_optimizer(cmw, config.cmw_lr) if cmw is not None else None
    step_cfg = MetaStepConfig(
        temperature=config.temperature, interval=config.meta_interval, hypergrad=config.hypergrad, autocast=config.bf16
    )

    data = PairDataModule(data_config(config), rank=rank, world_size=world)
    start_epoch, step = 0, 0
    ckpt_path = out_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if len(state["data"]) != world:
            raise USCLError(f"{ckpt_path} was written by {len(state['data'])} process(es), this run has {world}: "
                            f"resume with the same --nproc-per-node, or start a new --out folder")
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if cmw is not None:
            cmw.load_state_dict(state["cmw"])
            cmw_opt.load_state_dict(state["cmw_optimizer"])
        data.load_state_dict(state["data"][rank])
        restore_rng_state(state["rng"][rank])
        start_epoch, step = state["epoch"], state["step"]
        if rank == 0:
            log.info("resumed from %s at epoch %d, step %d", ckpt_path, start_epoch, step)
    elif resume and rank == 0:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out_dir)

    def checkpoint(epoch: int) -> None:
        data_states = [data.state_dict()]
        rng_states = [capture_rng_state()]
        if world > 1:
            gathered_data, gathered_rng = [None] * world, [None] * world
            torch_dist.all_gather_object(gathered_data, data_states[0])
            torch_dist.all_gather_object(gathered_rng, rng_states[0])
            data_states, rng_states = gathered_data, gathered_rng
        if rank == 0:
            save_checkpoint(ckpt_path, {
                "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "cmw": cmw.state_dict() if cmw is not None else None,
                "cmw_optimizer": cmw_opt.state_dict() if cmw_opt is not None else None,
                "data": data_states, "rng": rng_states, "epoch": epoch, "step": step,
                "config": dataclasses.asdict(config),
            })

    metrics = _Metrics(out_dir, rank == 0, config.tensorboard)
    meta_batches = data.meta_iterator() if cmw is not None else None
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    loss_value = float("nan")
    done = False
    for epoch in range(start_epoch, config.epochs):
        metrics.weights.clear()
        pending_weights: list[tuple[list[str], torch.Tensor]] = []
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", dynamic_ncols=True,
                       total=(data.num_videos // (config.batch_size * world)) if data.num_videos else None)
        wait = 0.0
        pairs = 0
        epoch_start = tick = time.perf_counter()
        batches = iter(data.train_loader(epoch))
        while (batch := _next_on_every_rank(batches, device, world)) is not None:
            got = time.perf_counter()
            wait += got - tick
            x1, x2 = data.gpu_views(batch, device)
            if config.channels_last:
                x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
            if cmw is not None:
                m1 = m2 = None
                if step_cfg.due(step):
                    m1, m2 = data.gpu_views(next(meta_batches), device)
                out = meta_step(model, cmw, optimizer, cmw_opt, x1, x2, m1, m2, step=step, config=step_cfg)
            else:
                out = plain_step(model, optimizer, x1, x2, temperature=config.temperature, autocast=config.bf16)
            nonfinite |= ~torch.isfinite(out.loss)
            step += 1
            pairs += len(batch) * world
            if out.weights is not None:
                pending_weights.append((batch.sources, out.weights))
            at_checkpoint = step % config.checkpoint_every == 0
            if step % config.log_every == 0 or at_checkpoint:
                if _any_rank(nonfinite, world):  # the only host syncs: at log and checkpoint points
                    raise TrainingDivergedError(
                        f"loss became {out.loss.item()} by epoch {epoch + 1}, step {step}; nothing was saved after "
                        f"the last good checkpoint {ckpt_path if ckpt_path.exists() else '(none yet)'}. "
                        f"Lower lr or turn off bf16, then resume with --resume."
                    )
                loss_value = out.loss.item()
                for sources, weights in pending_weights:  # device -> host once per log point
                    for source, w in zip(sources, weights.float().cpu().tolist()):
                        metrics.weights[source].append(w)
                pending_weights.clear()
                elapsed = time.perf_counter() - epoch_start
                record = {"epoch": epoch + 1, "step": step, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"],
                          "pairs_per_s": pairs / max(elapsed, 1e-9), "data_wait": wait / max(elapsed, 1e-9)}
                if device.type == "cuda":  # the allocator's counter: read on the host, no device sync
                    record["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                if out.meta_loss is not None:
                    record["meta_loss"] = out.meta_loss.item()
                if out.weights is not None:
                    record["weight_mean"] = out.weights.float().mean().item()
                metrics.log(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{record['lr']:.3g}",
                                    pairs_s=f"{record['pairs_per_s']:.1f}",
                                    wait=f"{100 * record['data_wait']:.0f}%")
            if bar is not None:
                bar.update(1)
            if at_checkpoint:
                checkpoint(epoch)
            if config.max_steps and step >= config.max_steps:
                done = True
                break
            tick = time.perf_counter()
        if bar is not None:
            bar.close()
        if _any_rank(nonfinite, world):
            raise TrainingDivergedError(f"loss became non-finite in epoch {epoch + 1}; last good checkpoint kept at "
                                        f"{ckpt_path}. Lower lr or turn off bf16, then resume with --resume.")
        if done:
            checkpoint(epoch)
            break
        scheduler.step()
        checkpoint(epoch + 1)
    metrics.close()

    if world > 1:  # BN running statistics are per rank after the last forward; DDP's model keeps rank 0's
        for buffer in core.buffers():
            torch_dist.broadcast(buffer, src=0)
    digest = _weights_hash(torch.nn.ModuleDict({"model": core, **({"cmw": cmw} if cmw is not None else {})}))
    hashes = [digest]
    if world > 1:
        hashes = [None] * world
        torch_dist.all_gather_object(hashes, digest)
    export_dir = None
    if rank == 0:
        export_dir = _export(config, core, cmw, out_dir)
        if (out_dir / "metrics.jsonl").exists():
            _plot(out_dir, dict(metrics.weights))
        summary = {"epochs": config.epochs, "steps": step, "final_loss": loss_value, "rank_weight_hashes": hashes,
                   "decoded": data.stats.decoded, "skipped": data.stats.skipped, "export": str(export_dir),
                   "world_size": world, "environment": environment(device)}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if world > 1:
        torch_dist.barrier()
        torch_dist.destroy_process_group()
    return RunResult(out_dir, export_dir, config.epochs, step, loss_value, digest)
