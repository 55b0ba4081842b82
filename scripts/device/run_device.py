"""The device run (issue 12.5): pretrain from the frame store, evaluate, and hand back what matters, in one lease.

Started by ``scripts/device/run.sh`` (which documents the environment variables) from the repository root, with the
bundle of ``scripts/device/build_bundle.py`` carried. Stages, in order of value, each skipped when an earlier
lease finished it (``$BUNDLE/resume/results.json``):

    bench                  frame-store pairs/s on the device (benchmarks/bench_store.py, no host sync allowed)
    pretrain:meta_uscl     Meta-USCL from the store (bn_views per_view, the reference), then eval:meta_uscl
    eval:random            the random-init baseline
    pretrain:uscl, eval:uscl, pretrain:simclr, eval:simclr
    pretrain:meta_uscl_joint, eval:meta_uscl_joint   (JOINT=1: both views in one BatchNorm batch, if time is left)

Every stage runs in this one process (one import of torch and timm) under a deadline: when ``BUDGET_S`` is
about to run out the stage is interrupted, no new stage starts, and what exists is written to ``$OUT`` (at most
8 files of at most 15 MiB, see :mod:`device_pack`): ``results.json`` (every figure, every stage's status and
time, what to resume), ``results.md`` (the method x task table, the benchmark, each evaluation), ``folds.png``,
``run.log`` (written by run.sh), the Meta-USCL backbone (fp16 safetensors in two parts) once it is pretrained
and evaluated, and the resume state of the one run that is pretrained (or cut) but not yet evaluated.
Copy what came back into ``$BUNDLE/resume/`` (``build_bundle.py --resume-from DIR``) and the next lease
continues from there.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import logging
import os
import runpy
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_pack import PART_BYTES, pack_resume, parts_of, save_shards, unpack_resume

log = logging.getLogger("device")

REPO = Path(__file__).resolve().parents[2]
PRESETS = {"meta_uscl": "meta_uscl", "uscl": "uscl", "simclr": "simclr", "meta_uscl_joint": "meta_uscl"}


@dataclass
class Settings:
    """The run's budget and layout, from environment variables (defaults: the paper's budget at 64²)."""

    bundle: Path
    out: Path
    work: Path
    device: str
    epochs: int
    size: int
    batch: int
    meta_batch: int
    eval_epochs: int
    frames: int
    folds: list[int]
    tasks: list[str]
    methods: list[str]
    max_items: int | None
    budget_s: float
    finish_s: float
    start: float
    bench_batches: int
    checkpoint_every: int

    @classmethod
    def from_env(cls) -> Settings:
        e = os.environ.get
        methods = e("METHODS", "meta_uscl uscl simclr").split() + (
            ["meta_uscl_joint"] if e("JOINT", "1") == "1" else []
        )
        return cls(
            bundle=Path(e("BUNDLE", ".device_bundle")),
            out=Path(e("OUT", "runs/device_out")),
            work=Path(e("WORK", "runs/device_work")),
            device=e("DEVICE", "cuda"),
            epochs=int(e("EPOCHS", "300")),
            size=int(e("SIZE", "64")),
            batch=int(e("BATCH", "32")),
            meta_batch=int(e("META_BATCH", "32")),
            eval_epochs=int(e("EVAL_EPOCHS", "30")),
            frames=int(e("FRAMES", "16")),
            folds=[int(f) for f in e("FOLDS", "0 1 2 3 4").split()],
            tasks=e("TASKS", "pocus busi busi_seg").split(),
            methods=methods,
            max_items=int(e("MAX_ITEMS")) if e("MAX_ITEMS") else None,  # type: ignore[arg-type]
            budget_s=float(e("BUDGET_S", "540")),
            finish_s=float(e("FINISH_S", "25")),
            start=float(e("RUN_START", str(time.time()))),
            bench_batches=int(e("BENCH_BATCHES", "300")),
            checkpoint_every=int(e("CHECKPOINT_EVERY", "50")),
        )

    def left(self) -> float:
        """Seconds left for stages (the finishing reserve already taken off)."""
        return self.start + self.budget_s - self.finish_s - time.time()


@dataclass
class Results:
    """Everything handed back, carried from lease to lease."""

    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def carried(cls, path: Path) -> Results:
        data = json.loads(path.read_text()) if path.is_file() else {}
        for key in ("stages", "runs", "evals", "leases"):
            data.setdefault(key, {} if key != "leases" else [])
        return cls(data)

    def done(self, stage: str) -> bool:
        return self.data["stages"].get(stage, {}).get("status") == "done"

    def mark(self, stage: str, status: str, seconds: float, note: str = "") -> None:
        self.data["stages"][stage] = {"status": status, "seconds": round(seconds, 1), "note": note}


# ---------------------------------------------------------------------------------------------------- deadline


class StageCut(Exception):
    """The deadline interrupted a stage."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt the main thread after ``seconds`` (KeyboardInterrupt there, turned into :class:`StageCut`)."""
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        _thread.interrupt_main()

    timer = threading.Timer(max(0.0, seconds), fire)
    timer.start()
    try:
        yield
    except KeyboardInterrupt:
        if fired.is_set():
            raise StageCut from None
        raise
    finally:
        timer.cancel()


def run_stage(s: Settings, results: Results, name: str, fn: Callable[[], str]) -> None:
    """Run ``fn`` unless done in an earlier lease or out of time; record its status, time and note."""
    if results.done(name):
        log.info("%s: done in an earlier lease", name)
        return
    if s.left() <= 5:
        results.mark(name, "not started", 0.0, "no time left in this lease")
        return
    log.info("%s: starting, %.0f s left", name, s.left())
    t0 = time.time()
    try:
        with deadline(s.left()):
            note = fn()
        results.mark(name, "done", time.time() - t0, note)
    except StageCut:
        results.mark(name, "cut", time.time() - t0, "interrupted at the lease's deadline")
        log.warning("%s: cut at the deadline", name)
    except Exception as e:
        results.mark(name, "failed", time.time() - t0, f"{type(e).__name__}: {e}")
        log.exception("%s failed", name)
    finally:
        write_results(s, results)


# ---------------------------------------------------------------------------------------------------- bundle


def prepare(s: Settings) -> dict[str, Any]:
    """Check the bundle fits these settings; unpack the store (raw, for fast reloads) and the task cache."""
    manifest = json.loads((s.bundle / "manifest.json").read_text())
    wanted = {"size": s.size, "frames": s.frames, "max_items": s.max_items}
    diff = {k: (manifest[k], v) for k, v in wanted.items() if manifest[k] != v}
    missing = sorted(set(s.tasks) - set(manifest["tasks"]))
    if diff or missing:
        raise SystemExit(f"{s.bundle}: built for other settings {diff} / without tasks {missing}; rebuild it")
    s.work.mkdir(parents=True, exist_ok=True)
    raw = s.work / "store.frames"
    if not raw.exists():
        from timm_uscl.training.data.store import load_store, save_store

        save_store(load_store(s.bundle / manifest["store"]["file"]), raw)
    tasks = s.work / "tasks"
    if not tasks.exists():
        with tarfile.open(s.bundle / manifest["tasks_file"]) as tar:
            tar.extractall(tasks, filter="data")
    return manifest


def restore(s: Settings, results: Results) -> None:
    """An earlier lease's runs: summaries and configs for the table, ``last.pt`` of the run it handed back."""
    for method, run in results.data["runs"].items():
        if not results.done(f"eval:{method}"):
            continue  # a run still to finish gets its folder from the trainer, resumed from last.pt below
        folder = s.work / method
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(run["summary"], indent=1))
        (folder / "config.yaml").write_text(run["config_yaml"])
    for method, ev in results.data["evals"].items():
        (s.work / f"eval_{method}.json").write_text(json.dumps(ev))
    for method in PRESETS:
        parts = parts_of(s.bundle / "resume", f"resume_{method}")
        if parts and not (s.work / method / "last.pt").exists():
            note = unpack_resume(parts, s.work / method / "last.pt")
            log.info("resume state of %s unpacked (%s)", method, note)


# ---------------------------------------------------------------------------------------------------- stages


def bench(s: Settings, results: Results) -> str:
    """benchmarks/bench_store.py on the device, from the unpacked store; its table goes into the results."""
    figures = s.work / "bench.json"
    source = results.data.get("bundle", {}).get("store", {}).get("source", "covid_blues")  # the store's data name
    argv = ["bench_store.py", "--store-file", str(s.work / "store.frames"), "--data", source, "--device", s.device]
    argv += ["--size", str(s.size), "--batch", str(s.batch), "--batches", str(s.bench_batches)]
    argv += ["--baseline", "none", "--threads", "1", "--json", str(figures)]
    saved, sys.argv = sys.argv, argv
    try:
        with contextlib.redirect_stdout(table := _Tee()):
            runpy.run_path(
                str(Path(__file__).resolve().parents[2] / "benchmarks" / "bench_store.py"), run_name="__main__"
            )
    finally:
        sys.argv = saved
    results.data["bench"] = {**json.loads(figures.read_text()), "table": table.text}
    return f"{results.data['bench']['store_pairs_per_s']:.0f} pairs/s"


class _Tee:
    """stdout that is both printed and kept."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return sys.__stdout__.write(text) if sys.__stdout__ is not None else len(text)

    def flush(self) -> None:
        if sys.__stdout__ is not None:
            sys.__stdout__.flush()


def pretrain(s: Settings, results: Results, method: str) -> str:
    """One method, from the store, resumed from ``last.pt`` when an earlier lease left one."""
    from timm_uscl.training.config import load_config
    from timm_uscl.training.engine import pretrain as run_pretrain

    folder = s.work / method
    overrides: dict[str, Any] = {
        "epochs": s.epochs,
        "image_size": s.size,
        "batch_size": s.batch,
        "meta_batch_size": s.meta_batch,
        "device": s.device,
        "num_workers": 0,
        "store": "device",
        "store_file": str(s.work / "store.frames"),
        # the bundle's store replaces the videos; its data name (covid_blues) is what the store file checks and the
        # export's card cites
        "source": results.data.get("bundle", {}).get("store", {}).get("source", "covid_blues"),
        "cache_dir": None,
        "out_dir": str(folder),
        "checkpoint_every": s.checkpoint_every,
        "log_every": 10,
        "bn_views": "joint" if method.endswith("_joint") else "per_view",
    }
    config = load_config(PRESETS[method], None, overrides)
    resumed = (folder / "last.pt").exists()
    result = run_pretrain(config, resume=resumed, progress=False)
    lines = (folder / "metrics.jsonl").read_text().splitlines() if (folder / "metrics.jsonl").exists() else []
    results.data["runs"][method] = {
        "summary": json.loads((folder / "summary.json").read_text()),
        "config_yaml": (folder / "config.yaml").read_text(),
        "last_metrics": json.loads(lines[-1]) if lines else None,
        "resumed": resumed,
    }
    return f"{result.steps} steps, final loss {result.final_loss:.4f}" + (" (resumed)" if resumed else "")


def evaluate(s: Settings, results: Results, method: str) -> str:
    """The reference protocol on the bundle's decoded tasks (no video decoder needed)."""
    from timm_uscl.training.evaluation import evaluate as run_evaluate

    common = dict(
        tasks=s.tasks,
        data_root=s.bundle / "data",
        folds=s.folds,
        image_size=s.size,
        frames_per_video=s.frames,
        epochs=s.eval_epochs,
        max_items=s.max_items,
        device=s.device,
        task_cache=str(s.work / "tasks"),
        progress=False,
    )
    if method == "random":
        ev = run_evaluate("resnet18_uscl", pretrained=False, **common)
    else:
        ev = run_evaluate(f"local-dir:{s.work / method / 'export'}", **common)
    (s.work / f"eval_{method}.json").write_text(json.dumps(ev))
    results.data["evals"][method] = ev
    return ", ".join(f"{t} {ev['runtime_s'][t]:.0f} s" for t in ev["runtime_s"])


# ---------------------------------------------------------------------------------------------------- outputs


def markdown(s: Settings, results: Results) -> str:
    """results.md: the settings, every stage, the method x task table, the benchmark, each evaluation."""
    from timm_uscl.training.evaluation import results_to_markdown
    from timm_uscl.training.evaluation.repro import comparison_table

    d = results.data
    out = ["# Device run", "", f"Settings: `{json.dumps(_plain(asdict(s)))}`", ""]
    out += ["| stage | status | seconds | note |", "|---|---|---:|---|"]
    out += [f"| {k} | {v['status']} | {v['seconds']} | {v['note']} |" for k, v in d["stages"].items()]
    if d["evals"]:
        out += ["", "## Methods x tasks", "", comparison_table(s.work)]
    if "bench" in d:
        out += ["", "## Frame store on the device", "", "```", d["bench"]["table"].strip(), "```"]
    for method, ev in d["evals"].items():
        out += ["", f"## {method}", "", results_to_markdown(ev)]
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value


def write_results(s: Settings, results: Results) -> None:
    """results.json, results.md and folds.png in $OUT, rewritten after every stage (a hard kill loses little)."""
    s.out.mkdir(parents=True, exist_ok=True)
    tmp = s.out / ".results.json.tmp"
    tmp.write_text(json.dumps(_plain(results.data), indent=1) + "\n")
    tmp.replace(s.out / "results.json")
    try:
        (s.out / "results.md").write_text(markdown(s, results))
        if results.data["evals"]:
            from timm_uscl.training.evaluation.repro import plot_folds

            plot_folds(s.work, s.out / "folds.png")
    except Exception:
        log.exception("results.md / folds.png")


def in_flight(s: Settings, results: Results) -> str | None:
    """The first method with a checkpoint but no evaluation: its resume state is what goes back."""
    for method in s.methods:
        if not results.done(f"eval:{method}") and (s.work / method / "last.pt").exists():
            return method
    return None


def finish(s: Settings, results: Results) -> None:
    """The resume state of the run in flight, the Meta-USCL backbone once evaluated, then the results."""
    from safetensors.torch import load_file

    returned = []
    method = in_flight(s, results)
    if method is not None:
        returned += pack_resume(s.work / method / "last.pt", s.out, f"resume_{method}")
    weights = s.work / "meta_uscl" / "export" / "model.safetensors"
    if results.done("eval:meta_uscl") and weights.exists() and method != "meta_uscl":
        returned += save_shards(load_file(str(weights)), s.out, "meta_uscl_backbone_fp16")
    results.data["returned"] = [p.name for p in returned]
    if results.data["leases"]:
        results.data["leases"][-1]["seconds"] = round(time.time() - s.start, 1)
    write_results(s, results)
    files = [p for p in s.out.iterdir() if p.is_file()]
    big = [p.name for p in files if p.stat().st_size > PART_BYTES + (1 << 20)]
    log.info("$OUT holds %d files, %.1f MiB: %s", len(files), sum(p.stat().st_size for p in files) / 2**20, big)
    if len(files) > 8 or big:
        log.error("over the return limits (8 files of at most 16 MiB): %s", [p.name for p in files])


# ---------------------------------------------------------------------------------------------------- main


def plan(s: Settings, results: Results) -> list[tuple[str, str]]:
    """(kind, method) in order of value; a method pretrained earlier but not evaluated is pretrained again
    (resumed at its last epoch: only its export is rebuilt)."""
    order: list[tuple[str, str]] = [("bench", "")]
    for i, method in enumerate(s.methods):
        if results.done(f"pretrain:{method}") and not results.done(f"eval:{method}"):
            results.mark(f"pretrain:{method}", "to finish", 0.0, "evaluation pending: export rebuilt from last.pt")
        order += [("pretrain", method), ("eval", method)] + ([("eval", "random")] if i == 0 else [])
    return order if s.methods else [*order, ("eval", "random")]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = Settings.from_env()
    results = Results.carried(s.bundle / "resume" / "results.json")
    results.data["leases"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.start))})
    manifest = prepare(s)
    results.data["bundle"] = {k: manifest[k] for k in ("commit", "built", "size", "frames", "tasks", "store")}
    restore(s, results)
    for kind, method in plan(s, results):
        name = f"{kind}:{method}" if method else kind
        export = s.work / method / "export" / "model.safetensors"
        if kind == "eval" and method != "random" and not export.exists() and not results.done(name):
            results.mark(name, "not started", 0.0, "no export: pretraining did not finish")
            continue
        stage: Callable[[], str] = {
            "bench": lambda: bench(s, results),
            "pretrain": lambda m=method: pretrain(s, results, m),  # type: ignore[misc]
            "eval": lambda m=method: evaluate(s, results, m),  # type: ignore[misc]
        }[kind]
        run_stage(s, results, name, stage)
    finish(s, results)
    failed = [k for k, v in results.data["stages"].items() if v["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
