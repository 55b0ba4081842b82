"""The pretraining loop: data -> (meta) step -> checkpoints -> metrics -> export, in named phases.

``pretrain`` = :func:`dist.detect <timm_uscl.training.dist.detect>` and :func:`dist.start_group
<timm_uscl.training.dist.start_group>` (once) -> :func:`claim_run_folder` (the folder is this run's alone) ->
:func:`build_run` (model, optimizers, data) -> :func:`resume_run` (``--resume``: same config, checkpoint state) ->
:func:`train_one_epoch` per epoch, each followed by :func:`save_run_checkpoint` -> :func:`finish_run` (export, plots,
summary). What a phase hands to the next is split by lifetime: the :class:`Run` is built once and never reassigned,
the :class:`Progress` (epochs done, step, last loss) changes every step; each phase takes the one(s) it needs.

Runs on one process or under ``torchrun`` (DDP: NCCL on GPUs, gloo on CPUs). Rank 0 writes the run folder:

    <out_dir>/config.yaml        the resolved config
    <out_dir>/last.pt            the atomic checkpoint (every ``checkpoint_every`` steps and at epoch ends)
    <out_dir>/metrics.jsonl      one line per logged step
    <out_dir>/summary.json       final figures, including a hash of every rank's weights
    <out_dir>/plots/*.png        loss and lr curves, CMW-Net weight histograms per data source
    <out_dir>/export/            the Hub-ready backbone (see timm_uscl.export), head and CMW-Net beside it
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import timm_uscl  # noqa: F401  (registers the plugin's architectures for ContrastiveModel)
from timm_uscl.errors import CheckpointFormatError
from timm_uscl.outdir import write_text_atomic

from . import dist
from .checkpoint import CHECKPOINT_NAME, capture_rng_state, load_training_state, restore_rng_state, save_checkpoint
from .config import TrainConfig, data_config, save_config
from .data import PairBatch
from .data.datamodule import DataModule, data_module, store_taken
from .data.store import corpus_digest
from .data.store_module import StoreDataModule, batch_sizes
from .errors import RunFolderError, TrainingDivergedError, USCLError
from .evaluation.online import OnlineEvaluator
from .meta import MetaStepConfig, StepGraphs, StepOutput, cmw_optimizer, meta_step, plain_step
from .model import CMWNet, ContrastiveModel
from .monitor import PLOT_INTERVAL_S, Metrics, check_reporting, duration, plot_run, read_records
from .optim import build_optimizer, build_scheduler, lr_factor
from .provenance import environment
from .run_export import export_run, run_name
from .run_folder import RunFolder, check_resume_config, claim_run_folder
from .runtime import resolve_precision, resolve_threads

__all__ = [
    "TrainingDivergedError",
    "RunResult",
    "Run",
    "Progress",
    "pretrain",
    "lr_factor",
    "build_run",
    "resume_run",
    "train_one_epoch",
    "save_run_checkpoint",
    "finish_run",
    "evaluate_online",
    "build_online_evaluator",
    "start_banner",
    "epoch_line",
    "planned_steps",
    "refresh_plots",
]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    out_dir: Path
    export_dir: Path | None
    epochs: int
    steps: int
    final_loss: float
    weights_hash: str


@dataclass(frozen=True)
class Run:
    """What a run is, built once by :func:`build_run` and never reassigned: the config as resolved, this process's
    place in the job, the model, its optimizers and the data. (The objects themselves change as they train; which
    objects they are does not.)"""

    config: TrainConfig
    process: dist.Process  # rank, world size, device: decided once, by dist.detect
    out_dir: Path
    core: ContrastiveModel  # the model that owns the weights
    model: nn.Module  # what the step calls: ``core``, or its DDP / compiled wrapper
    cmw: CMWNet | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    cmw_opt: torch.optim.Optimizer | None
    step_cfg: MetaStepConfig
    data: DataModule  # the stream, or the frame store (DataConfig.store)
    graphs: StepGraphs | None = None  # the steps as CUDA graphs (config.graphs), None: eager
    online: OnlineEvaluator | None = None  # rank 0's online evaluation (frozen-feature probes), when configured
    data_digest: str | None = None  # the clips trained on (data.store.corpus_digest), kept in last.pt (N7)

    @property
    def device(self) -> torch.device:
        return self.process.device

    @property
    def rank(self) -> int:
        return self.process.rank

    @property
    def world(self) -> int:
        return self.process.world

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME


@dataclass
class Progress:
    """How far a run got: what changes as it trains (a fresh run's, or what :func:`resume_run` read from last.pt)."""

    nonfinite: torch.Tensor  # on the device: did any loss so far come back non-finite (read at log points only)
    epochs_done: int = 0  # completed epochs: the index of the epoch to (re)enter (last.pt's ``epochs_done``)
    step: int = 0  # steps taken: the last step's number in metrics.jsonl (last.pt's ``step``)
    last_loss: float = float("nan")  # the last loss read on the host (at a log point)
    meta_batches: Iterator[PairBatch] | None = None  # the meta set's batches, opened at the first meta step
    online_scores: dict[str, float] = field(default_factory=dict)  # latest online scores, shown on the progress bar
    resumed_with: list[str] = field(default_factory=list)  # recorded config changes at resume (e.g. more epochs)

    @classmethod
    def start(cls, device: torch.device) -> Progress:
        """A run's progress before its first step."""
        return cls(nonfinite=torch.zeros((), dtype=torch.bool, device=device))


# ---------------------------------------------------------------------------------------------------- build


def _wrap(core: ContrastiveModel, config: TrainConfig, process: dist.Process) -> nn.Module:
    """DDP across ranks; ``torch.compile`` for plain runs (never through the meta step's double backward)."""
    model: nn.Module = core
    if process.world > 1:
        device_ids = [process.device.index] if process.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(core, device_ids=device_ids)
    if config.compile and not config.meta:
        model = torch.compile(model)  # type: ignore[assignment]  # an nn.Module wrapper in practice
    return model


def _claim(config: TrainConfig, process: dist.Process, *, resume: bool, overwrite: bool) -> RunFolder | None:
    """Rank 0 claims the run folder; every rank learns the outcome (a rank raising alone would hang the others)."""
    folder, error = None, None
    if process.rank == 0:
        try:
            folder = claim_run_folder(config.out_dir, resume=resume, overwrite=overwrite)
        except (USCLError, OSError) as err:  # e.g. a read-only or missing parent folder
            error = err if isinstance(err, USCLError) else RunFolderError(f"{config.out_dir}: {err}")
    outcome = dist.broadcast_object(None if error is None else str(error), src=0)
    if outcome is not None and error is None:
        raise RunFolderError(outcome)
    if error is not None:
        raise error
    return folder


def resolve_runtime(config: TrainConfig, process: dist.Process) -> TrainConfig:
    """``precision: auto`` resolved to what runs on this machine (so config.yaml, checkpoints and the export record
    it, and a resume on a machine that would choose otherwise is refused), and the CPU threads set; logged once."""
    precision = resolve_precision(config.precision, process.device)
    threads = resolve_threads(config.threads)
    torch.set_num_threads(threads)
    if process.rank == 0:
        log.info(
            "runtime: %s, %s (%s), %d CPU thread(s), channels_last=%s",
            process.device,
            precision.name,
            precision.reason,
            threads,
            config.channels_last,
        )
    return dataclasses.replace(config, precision=precision.name)


def _resolved_store(config: TrainConfig, data: DataModule) -> TrainConfig:
    """``store: auto`` recorded as the path taken (``device``: the frame store, ``off``: the stream)."""
    if config.data.store != "auto":
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, store=store_taken(data)))


def build_online_evaluator(config: TrainConfig, *, rank: int = 0) -> OnlineEvaluator | None:
    """The online evaluation of rank 0 (None when off, or on another rank): decodes and caches the labelled set once.
    Built before the process group starts, so a slow decode never holds the other ranks in a collective past its
    timeout."""
    if not config.online_eval or rank != 0:
        return None
    return OnlineEvaluator(
        config.online_eval,
        data_root=config.online_data_root,
        image_size=config.data.image_size,
        frames_per_video=config.online_frames,
        max_items=config.online_max_items,
        mean=config.data.mean,
        std=config.data.std,
        seed=config.data.seed,
        pretrain_data=[config.data.source] if isinstance(config.data.source, str) else list(config.data.source),
    )


def build_run(
    config: TrainConfig,
    process: dist.Process,
    *,
    online: OnlineEvaluator | None = None,
    data_digest: str | None = None,
) -> Run:
    """Phase 1, once: model, CMW-Net, optimizers, data, on the process ``dist.detect`` placed (its group started
    and the run folder claimed before)."""
    config = resolve_runtime(config, process)
    device = process.device
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.data.seed)  # identical initial weights on every rank
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    core = ContrastiveModel(config.arch, feat_dim=config.proj_dim, init=config.init).to(device)
    if config.channels_last:
        core = core.to(memory_format=torch.channels_last)
    cmw = CMWNet(2 * core.num_features).to(device) if config.meta else None
    optimizer = build_optimizer(config, core)
    step_cfg = MetaStepConfig(
        temperature=config.temperature,
        interval=config.meta_interval,
        hypergrad=config.hypergrad,  # validated by TrainConfig
        autocast=config.precision == "bf16",
        bn_views=config.bn_views,
    )
    graphs = None if config.graphs == "off" or config.compile else StepGraphs(config.graphs)
    data = data_module(
        data_config(config), rank=process.rank, world_size=process.world, device=device, need_meta=config.meta
    )
    config = _resolved_store(config, data)
    return Run(
        config=config,
        process=process,
        out_dir=out_dir,
        core=core,
        model=_wrap(core, config, process),
        cmw=cmw,
        optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer),
        cmw_opt=cmw_optimizer(cmw, config.cmw_lr) if cmw is not None else None,
        step_cfg=step_cfg,
        data=data,
        graphs=graphs,
        online=online,
        data_digest=data_digest,
    )


# ---------------------------------------------------------------------------------------------------- resume


def _trim_metrics(run: Run, step: int) -> None:
    """Drop metrics lines of steps after the checkpoint's ``step``: the resumed run takes those steps again."""
    path = run.out_dir / "metrics.jsonl"
    if run.rank != 0 or not path.exists():
        return
    kept = [record for record in read_records(path) if record.get("step", 0) <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept))


def resume_run(run: Run) -> Progress:
    """Phase 2 (``--resume``): weights, optimizers, scheduler, data position and RNG states from ``last.pt``, which
    must have been written with the same config (:func:`check_resume_config`); the progress it records (a fresh
    one without a last.pt)."""
    progress = Progress.start(run.device)
    if not run.ckpt_path.exists():
        return progress
    state = load_training_state(run.ckpt_path)  # older checkpoints' field names mapped to today's
    try:
        progress.resumed_with = check_resume_config(state["config"], dataclasses.asdict(run.config), run.ckpt_path)
    except (TypeError, ValueError, KeyError, AttributeError) as err:  # a foreign or hand-edited config (L4)
        raise _foreign(run, err) from None
    if progress.resumed_with and run.rank == 0:
        log.warning("resuming %s with %s (recorded in summary.json)", run.ckpt_path, "; ".join(progress.resumed_with))
    if len(state["data"]) != run.world:
        raise RunFolderError(
            f"{run.ckpt_path} was written by {len(state['data'])} process(es), this run has {run.world}: "
            f"resume with the same --nproc-per-node, or start a new --out folder"
        )
    _check_finite_state(run, state)
    try:
        run.core.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.cmw is not None and run.cmw_opt is not None:
            run.cmw.load_state_dict(state["cmw"])
            run.cmw_opt.load_state_dict(state["cmw_optimizer"])
        run.data.load_state_dict(state["data"][run.rank])
        restore_rng_state(state["rng"][run.rank])
    except USCLError:
        raise
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError, AttributeError) as err:  # L4
        raise _foreign(run, err) from None
    progress.epochs_done, progress.step = state["epochs_done"], state["step"]
    _trim_metrics(run, progress.step)
    if run.rank == 0:
        log.info("resumed from %s at epoch %d, step %d", run.ckpt_path, progress.epochs_done, progress.step)
    return progress


def _check_resume_data(config: TrainConfig, digest: str | None) -> None:
    """Refuse to resume on other clips than the checkpoint's run trained on (videos deleted, added or changed under
    the same path): it continued with rc 0 and a summary of the second attempt's data only (N7)."""
    path = Path(config.out_dir) / CHECKPOINT_NAME
    if digest is None or not path.is_file():
        return
    try:  # mapped, not read: only one string is needed here
        recorded = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("data_digest")
    except Exception:  # noqa: BLE001 - resume_run names what is wrong with the file
        return
    if isinstance(recorded, str) and recorded != digest:
        raise RunFolderError(
            f"{path}: the data changed since this checkpoint ({recorded.split(':')[0]} clips then, "
            f"{digest.split(':')[0]} now, or other contents, at {config.data.source}); resume only on the data the run "
            f"started with (restore it), or start a new --out"
        )


def _foreign(run: Run, err: BaseException) -> CheckpointFormatError:
    """A last.pt whose parts do not fit this run (a partial or foreign model state, hand-edited values), one line."""
    reason = " ".join(str(err).split())[:160] or type(err).__name__
    return CheckpointFormatError(
        f"{run.ckpt_path}: not a checkpoint of this run ({reason}); resume only from the last.pt this run wrote, "
        f"or start again with --overwrite (or a new --out)"
    )


def _check_finite_state(run: Run, state: dict[str, Any]) -> None:
    """Refuse a last.pt holding non-finite weights: this code never writes one, so it was altered (or written by
    an older version); resuming it would diverge and then call it "the last good checkpoint" (L12)."""
    for owner in ("model", "cmw"):
        for key, tensor in (state[owner] or {}).items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                raise CheckpointFormatError(
                    f"{run.ckpt_path}: holds non-finite weights ({owner} tensor {key}), so it cannot be resumed; "
                    f"start again with --overwrite (or a new --out)"
                )


# ---------------------------------------------------------------------------------------------------- checkpoint


def _finite_weights(run: Run) -> bool:
    tensors = [t for module in (run.core, run.cmw) if module is not None for t in module.state_dict().values()]
    return bool(torch.stack([t.isfinite().all() for t in tensors if t.is_floating_point()]).all())


def save_run_checkpoint(run: Run, progress: Progress) -> None:
    """Every rank's data position and RNG state, rank 0's weights and optimizers, and how far the run got, into
    ``last.pt`` (atomic).

    Weights that became non-finite (a loss can still be finite one step after they did) stop the run here, so a
    checkpoint is only ever written with finite weights."""
    if not _finite_weights(run):
        raise TrainingDivergedError(
            f"the weights became non-finite by step {progress.step}; {_kept(run)} Lower lr or set precision=fp32, "
            f"then resume with --resume."
        )
    data_states = dist.gather_objects(run.data.state_dict())
    rng_states = dist.gather_objects(capture_rng_state())
    if run.rank != 0:
        return
    save_checkpoint(
        run.ckpt_path,
        {
            "model": run.core.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "cmw": run.cmw.state_dict() if run.cmw is not None else None,
            "cmw_optimizer": run.cmw_opt.state_dict() if run.cmw_opt is not None else None,
            "data": data_states,
            "rng": rng_states,
            "epochs_done": progress.epochs_done,
            "step": progress.step,
            "config": dataclasses.asdict(run.config),
            "data_digest": run.data_digest,
        },
    )


# ---------------------------------------------------------------------------------------------------- one epoch


def _kept(run: Run) -> str:
    if run.ckpt_path.exists():
        return f"the last good checkpoint {run.ckpt_path} is kept."
    return "no checkpoint was written before (nothing to resume from)."


def _next_on_every_rank(batches: Iterator[PairBatch], device: torch.device) -> PairBatch | None:
    """The next batch, or None once ANY rank has run out: DDP ranks must take the same number of steps
    (files are sharded, so ranks can hold a different number of videos)."""
    batch = next(batches, None)
    return batch if dist.every_rank(batch is not None, device) else None


def _step(run: Run, progress: Progress, batch: PairBatch) -> StepOutput:
    """One training iteration on ``batch``: views on the device, then the meta step or the plain step."""
    config, device = run.config, run.device
    x1, x2 = run.data.gpu_views(batch, device)
    if config.channels_last:
        x1 = x1.contiguous(memory_format=torch.channels_last)
        x2 = x2.contiguous(memory_format=torch.channels_last)
    if run.cmw is None or run.cmw_opt is None:
        plain = run.graphs.plain_step if run.graphs is not None else plain_step
        return plain(
            run.model,
            run.optimizer,
            x1,
            x2,
            temperature=config.temperature,
            autocast=config.precision == "bf16",
            bn_views=config.bn_views,
        )
    m1 = m2 = None
    if run.step_cfg.due(progress.step):
        if progress.meta_batches is None:
            progress.meta_batches = run.data.meta_iterator()
        m1, m2 = run.data.gpu_views(next(progress.meta_batches), device)
    meta = run.graphs.meta_step if run.graphs is not None else meta_step
    return meta(run.model, run.cmw, run.optimizer, run.cmw_opt, x1, x2, m1, m2, step=progress.step, config=run.step_cfg)


@dataclass
class _EpochClock:
    """Throughput and data-wait bookkeeping of one epoch, and the pair weights not yet copied to the host."""

    start: float = field(default_factory=time.perf_counter)
    tick: float = 0.0
    wait: float = 0.0
    pairs: int = 0
    pending_weights: list[tuple[list[str], torch.Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tick = self.start


def _log_point(
    run: Run, progress: Progress, out: StepOutput, *, epoch: int, clock: _EpochClock, metrics: Metrics, bar: Any
) -> None:
    """At a log or checkpoint point (the only host syncs): stop on a non-finite loss, else log a metrics line."""
    if dist.any_rank(progress.nonfinite):
        raise TrainingDivergedError(
            f"loss became {out.loss.item()} by epoch {epoch + 1}, step {progress.step}; nothing was saved after it: "
            f"{_kept(run)} Lower lr or set precision=fp32, then resume with --resume."
        )
    progress.last_loss = out.loss.item()
    for sources, weights in clock.pending_weights:  # device -> host once per log point
        for source, w in zip(sources, weights.float().cpu().tolist()):
            metrics.weights[source].append(w)
    clock.pending_weights.clear()
    elapsed = max(time.perf_counter() - clock.start, 1e-9)
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": progress.step,
        "loss": progress.last_loss,
        "lr": run.optimizer.param_groups[0]["lr"],
        "pairs_per_s": clock.pairs / elapsed,
        "data_wait": clock.wait / elapsed,
    }
    if run.device.type == "cuda":  # the allocator's counter: read on the host, no device sync
        record["gpu_peak_mib"] = torch.cuda.max_memory_allocated(run.device) / 2**20
    if out.meta_loss is not None:
        record["meta_loss"] = out.meta_loss.item()
    if out.weights is not None:
        record["weight_mean"] = out.weights.float().mean().item()
    eta = metrics.eta(progress.step)
    record["elapsed_s"] = round(metrics.elapsed(), 1)
    if eta is not None:
        record["eta_s"] = round(eta, 1)  # the whole run's, not this epoch's
    metrics.log(record)
    if bar is not None:
        bar.set_postfix(
            run_eta=duration(eta) if eta is not None else "?",
            loss=f"{progress.last_loss:.3f}",
            lr=f"{record['lr']:.3g}",
            pairs_s=f"{record['pairs_per_s']:.1f}",
            wait=f"{100 * record['data_wait']:.0f}%",
            **{k: f"{v:.3f}" for k, v in progress.online_scores.items()},
        )


def _progress_bar(run: Run, epoch: int, show: bool) -> Any:
    if not show or run.rank != 0:
        return None
    from tqdm.auto import tqdm

    total = steps_per_epoch(run)  # the same count as the banner and the ETA (the store's remainder batch included)
    return tqdm(desc=f"epoch {epoch + 1}/{run.config.epochs}", unit="step", dynamic_ncols=True, total=total)


def train_one_epoch(run: Run, progress: Progress, metrics: Metrics, *, epoch: int, show_bar: bool = True) -> bool:
    """Phase 3, once per epoch: every batch of this rank's videos; True when ``max_steps`` ended the run."""
    config = run.config
    metrics.weights.clear()
    bar = _progress_bar(run, epoch, show_bar)
    clock = _EpochClock()
    batches = iter(run.data.train_loader(epoch))
    done = False
    out, logged = None, progress.step
    while (batch := _next_on_every_rank(batches, run.device)) is not None:
        clock.wait += time.perf_counter() - clock.tick
        out = _step(run, progress, batch)
        progress.nonfinite |= ~torch.isfinite(out.loss)
        progress.step += 1
        clock.pairs += len(batch) * run.world
        if out.weights is not None:
            clock.pending_weights.append((batch.sources, out.weights))
        at_checkpoint = progress.step % config.checkpoint_every == 0
        if progress.step % config.log_every == 0 or at_checkpoint:
            _log_point(run, progress, out, epoch=epoch, clock=clock, metrics=metrics, bar=bar)
            logged = progress.step
        if bar is not None:
            bar.update(1)
        if at_checkpoint:
            _checkpoint_point(run, progress, metrics)
        if config.max_steps and progress.step >= config.max_steps:
            done = True
            break
        clock.tick = time.perf_counter()
    if out is not None and logged != progress.step:  # the epoch's last step is always logged (short runs too)
        _log_point(run, progress, out, epoch=epoch, clock=clock, metrics=metrics, bar=bar)
    if bar is not None:
        bar.close()
    return done


def _checkpoint_point(run: Run, progress: Progress, metrics: Metrics) -> None:
    """``last.pt`` as far as the run got, then the plots (so a running job's curves can be watched)."""
    save_run_checkpoint(run, progress)
    refresh_plots(run, metrics)


# ---------------------------------------------------------------------------------------------------- finish


def _weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def finish_run(run: Run, progress: Progress, metrics: Metrics) -> RunResult:
    """Phase 4: rank 0's BN statistics on every rank, the export, plots and ``summary.json``."""
    dist.broadcast_buffers(run.core, src=0)  # BN running statistics are per rank after the last forward
    modules = {"model": run.core, **({"cmw": run.cmw} if run.cmw is not None else {})}
    digest = _weights_hash(nn.ModuleDict(modules))
    hashes = dist.gather_objects(digest)
    export_dir = None
    if run.rank == 0:
        provenance = environment(run.device)
        export_dir = export_run(
            run.config,
            run.core,
            run.cmw,
            run.out_dir,
            progress.step,
            provenance["commit"],
            epochs_done=progress.epochs_done,
        )
        if (run.out_dir / "metrics.jsonl").exists():
            plot_run(run.out_dir, dict(metrics.weights))
        summary = {
            "wall_s": round(metrics.elapsed(), 1),  # this process, from the first step to the summary
            "epochs": progress.epochs_done,  # fewer than planned when max_steps stopped the run
            "epochs_planned": run.config.epochs,
            "steps": progress.step,
            "final_loss": progress.last_loss if math.isfinite(progress.last_loss) else None,
            "rank_weight_hashes": hashes,
            "decoded": run.data.stats.decoded,
            "skipped": run.data.stats.skipped,
            "export": str(export_dir),
            "world_size": run.world,
            "resumed_with_changes": progress.resumed_with,
            "graphs": dataclasses.asdict(run.graphs.stats) if run.graphs is not None else None,
            "environment": provenance,
        }
        # whole or not at all: a kill mid-write must not leave a summary that cannot be read (reproduce reads it)
        write_text_atomic(run.out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    dist.stop_group()
    return RunResult(run.out_dir, export_dir, progress.epochs_done, progress.step, progress.last_loss, digest)


def pretrain(config: TrainConfig, resume: bool = False, progress: bool = True, overwrite: bool = False) -> RunResult:
    """Run (or resume) a pretraining job as configured; returns where everything was written. ``progress``: show
    the progress bar (else one log line per epoch).

    ``config.out_dir`` must be free, or hold this run (``resume=True``), or be given up (``overwrite=True``: the
    previous run's files are listed in the log, then removed); see :mod:`.run_folder`."""
    check_reporting(tensorboard=config.tensorboard, progress=progress)  # before anything is claimed or built
    process = dist.detect(config.device)  # the only place rank, world size and device are decided
    online = build_online_evaluator(config, rank=process.rank)  # before the group: its decode holds no collective
    dist.start_group(process)
    folder = _claim(config, process, resume=resume, overwrite=overwrite)
    try:
        digest = corpus_digest(data_config(config))
        if resume:
            _check_resume_data(config, digest)  # before the data module: a changed folder fails there otherwise
        run = build_run(config, process, online=online, data_digest=digest)
        state = resume_run(run) if resume else Progress.start(run.device)
        if run.rank == 0:  # only now: a refused resume leaves the run's config.yaml as it was
            save_config(run.config, run.out_dir / "config.yaml")
        metrics = Metrics(run.out_dir, run.rank == 0, config.tensorboard)
        metrics.plan(first_step=state.step, total_steps=planned_steps(run))
        if run.rank == 0:
            log.info("%s", start_banner(run, state))
        try:
            _train(run, state, metrics, show_bar=progress)
        finally:
            metrics.close()
        return finish_run(run, state, metrics)
    finally:
        if folder is not None:
            folder.release()


def evaluate_online(run: Run, progress: Progress, metrics: Metrics, *, epoch: int, last: bool) -> None:
    """Every ``online_every`` epochs and at the end (rank 0): kNN / linear-probe accuracy of the frozen backbone on
    the labelled set, logged as ``online_*`` keys (metrics.jsonl, TensorBoard, ``plots/online.png``)."""
    if run.online is None or not (last or (epoch + 1) % run.config.online_every == 0):
        return
    scores = run.online(run.core.backbone)
    progress.online_scores = scores
    record: dict[str, Any] = {
        "epoch": epoch + 1,
        "step": progress.step,
        **{f"online_{k}": v for k, v in scores.items()},
    }
    metrics.log(record)
    log.info(
        "epoch %d online evaluation on %s: %s",
        epoch + 1,
        run.config.online_eval,
        ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
    )


def _train(run: Run, progress: Progress, metrics: Metrics, *, show_bar: bool) -> None:
    """The epochs left, each followed by its online evaluation and a checkpoint."""
    for epoch in range(progress.epochs_done, run.config.epochs):
        stopped = train_one_epoch(run, progress, metrics, epoch=epoch, show_bar=show_bar)
        evaluate_online(run, progress, metrics, epoch=epoch, last=stopped or epoch + 1 == run.config.epochs)
        if not show_bar and run.rank == 0:
            log.info("%s", epoch_line(run, progress, metrics, epoch=epoch))
        if stopped:  # max_steps: the epoch is not done; the checkpoint records where in it the run stopped
            _checkpoint_point(run, progress, metrics)
            return
        run.scheduler.step()
        progress.epochs_done = epoch + 1
        _checkpoint_point(run, progress, metrics)


# ---------------------------------------------------------------------------------------------------- watching


def steps_per_epoch(run: Run) -> int | None:
    """Steps of one epoch: the frame store's batches (every video, the remainder last), or the stream's full batches
    per rank; None when the source's size is not known up front (a streamed Hub dataset)."""
    if isinstance(run.data, StoreDataModule):
        return len(batch_sizes(run.data.rank_videos, run.config.data.batch_size))
    videos = run.data.num_videos
    return videos // (run.config.data.batch_size * run.world) if videos else None


def planned_steps(run: Run) -> int:
    """The whole run's steps (epochs x steps per epoch, capped by ``max_steps``); 0 when unknown."""
    per_epoch = steps_per_epoch(run)
    total = per_epoch * run.config.epochs if per_epoch else 0
    cap = run.config.max_steps
    return min(total, cap) if total and cap else total or cap


def start_banner(run: Run, progress: Progress) -> str:
    """What a run is about to do, logged once at its start: what data was found, how many steps, the model's size,
    where and how it runs. A wrong path, size or device shows here, not hours later."""
    config, data = run.config, run.config.data
    meta = run.data.num_meta_videos
    per_epoch, total = steps_per_epoch(run), planned_steps(run)
    params = sum(p.numel() for p in run.core.parameters())
    cmw = sum(p.numel() for p in run.cmw.parameters()) if run.cmw is not None else 0
    precision = "bf16 autocast" if config.precision == "bf16" else config.precision
    start = f", resuming at epoch {progress.epochs_done + 1}, step {progress.step}" if progress.step else ""
    return (
        f"pretrain {config.preset} -> {run.out_dir} (export {run_name(config)}): data {data.source}: "
        f"{run.data.num_videos if run.data.num_videos is not None else 'unknown number of'} training videos"
        f"{f', {meta} meta videos' if meta else ''}, {type(run.data).__name__}; "
        f"{per_epoch if per_epoch is not None else '?'} steps/epoch x {config.epochs} epochs = "
        f"{total or '?'} steps{' (max_steps)' if config.max_steps and total == config.max_steps else ''}{start}; "
        f"batch {data.batch_size} videos x {run.world} process(es), {data.image_size}px; "
        f"{config.arch} {params / 1e6:.2f} M parameters{f' + CMW-Net {cmw}' if cmw else ''}; "
        f"device {run.device}, {precision}, {torch.get_num_threads()} threads"
    )


def epoch_line(run: Run, progress: Progress, metrics: Metrics, *, epoch: int) -> str:
    """One line per epoch (``--no-progress``): progress, loss, throughput, elapsed time and the whole run's ETA."""
    last, eta = metrics.last, metrics.eta(progress.step)
    total = f"/{metrics.total_steps}" if metrics.total_steps else ""
    scores = "".join(f", {k} {v:.3f}" for k, v in progress.online_scores.items())
    loss = f"{last['loss']:.4f}" if isinstance(last.get("loss"), float) else "n/a"
    return (
        f"epoch {epoch + 1}/{run.config.epochs}: step {progress.step}{total}, loss {loss}, lr {last.get('lr', 0):.3g}, "
        f"{last.get('pairs_per_s', 0):.1f} pairs/s, data wait {100 * last.get('data_wait', 0):.0f}%{scores}; "
        f"elapsed {duration(metrics.elapsed())}, run ETA {duration(eta) if eta is not None else '?'}"
    )


def refresh_plots(run: Run, metrics: Metrics) -> None:
    """Redraw ``plots/`` from metrics.jsonl (rank 0, at a checkpoint), so a running job's curves can be watched; at
    most every :data:`PLOT_INTERVAL_S` seconds, as drawing costs about a second (a GPU run checkpoints often)."""
    if run.rank != 0 or not (run.out_dir / "metrics.jsonl").exists():
        return
    if metrics.plotted_at is not None and metrics.elapsed() - metrics.plotted_at < PLOT_INTERVAL_S:
        return
    plot_run(run.out_dir, dict(metrics.weights))
    metrics.plotted_at = metrics.elapsed()
