"""Paired comparison of evaluation results: every method minus a baseline (random init) and named pairs
(Meta-USCL − USCL, Meta-USCL − SimCLR), with 95 % intervals, in both scorings. ``timm-uscl compare`` prints it.

Why paired: the spread between folds (±8–18 points on POCUS) is mostly the folds' difficulty, which every method
shares; the difference of two methods on the same fold, seed and items varies far less, so orderings that the
mean ± std tables hide can show (or be shown absent).

Two scorings, each from the per-item predictions that :func:`.run.evaluate` keeps:

* ``ours``: each run's reported epoch (the final one, or the inner-validation pick), video level for video tasks
  (a video's mean softmax), image level otherwise.
* ``reference``: each run's best epoch *picked on its test fold*, frame level, all runs' test frames pooled,
  as the reference code reports: **optimistic**, for comparison with published figures only.

Two intervals for every difference:

* ``t``: the mean over runs (fold × seed) of the per-run difference, with a 95 % Student-t interval (n − 1 degrees
  of freedom). The runs of one fold share its test items, so they are not independent: read it as the run-to-run
  spread of the difference, not as an exact test.
* ``bootstrap``: the difference of the metric on all runs' test items pooled, with the 95 % percentile interval of
  a paired bootstrap that resamples videos or images (a video's frames and its runs under every seed move
  together), the same resamples for both methods.

A pair is refused in one line (:class:`EvaluationError`) unless both results were evaluated on the same folds,
seeds, protocols, budget, precision, settings and items (results written before ``precision`` was recorded ran
in fp32); results of different code commits are refused unless
``allow_mixed_commits``, and then flagged in the output (as is a modified work tree).

Results JSON (what :func:`.run.evaluate` returns and ``timm-uscl evaluate --out`` writes; strict JSON, an
undefined value is ``null``)::

    {"model", "arch", "pretrained", "init", "weights_sha256", "mean", "std",
     "config": {EvalConfig's fields (image_size, frames_per_video, epochs, seed, seeds, select, max_items, budget,
                precision: "fp32" | "bf16" as resolved, never "auto", ...), "task_epochs": {task: epochs},
                "run_seeds": [seed, ...], "folds": [...], "tasks": [...],
                "protocols": [...], "task_dir": str | null},
     "environment": {"commit": "<sha>[-dirty]" | null, "torch", "timm", "device", "cpu", "threads",
                     "precision": why auto chose it, or "set in the config"},
     "runtime_s": {task: seconds},
     "tasks": {task: {
         "description", "kind": "video" | "image" | "segmentation", "classes": [...], "folds": [...],
         "epochs": int, "n_items", "n_rows", "items": [file relative to the task folder, ...],
         "protocols": {"finetune" | "linear": {
             "name", "hyper": {...}, "seeds": [seed, ...] | null (the linear probe is deterministic: one run a fold),
             "folds": [{"fold", "seed": int | null, "n_train", "n_val", "n_test", "epoch", "metrics": {...},
                        "optimistic": {"epoch", ...}, "predictions": {"final": P, "optimistic": P}}, ...],
             "summary": {"metrics": {...: {"mean", "std"}}, "optimistic": {...}},  # over every fold x seed run
             "reference_style": {...}}}}}}

    P, classification: {"level": "video" | "frame" | "image", "item": [index into items], "y": [true class],
                        "pred": [argmax class], "prob": [[class probabilities]]}  # one entry per video/frame/image
    P, segmentation:   {"level": "image", "item": [...], "dice": [per-image Dice]}

``final`` is the ``ours`` scoring's level and epoch, ``optimistic`` the ``reference`` scoring's (the linear probe
has no epochs: its two differ in level only). ``folds`` lists every fold of the first seed, then the next seed's.

Pure Python and numpy: no torch, no scipy (the t quantile is computed here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import EvaluationError
from .config import METHODS

__all__ = [
    "SCORINGS",
    "Method",
    "Interval",
    "Value",
    "Difference",
    "Comparison",
    "load_method",
    "t_quantile",
    "t_interval",
    "compare",
    "comparison_markdown",
]

# scoring name -> (predictions key, label)
SCORINGS = {
    "ours": ("final", "ours: reported epoch, {level} level"),
    "reference": ("optimistic", "reference: best test-fold epoch, {level} level, pooled (optimistic)"),
}
NAMED_PAIRS = (("meta_uscl", "uscl"), ("meta_uscl", "simclr"))
# config keys that do not change what is measured (where it ran, how it printed, the random-init's init)
_IGNORED_CONFIG = frozenset({"progress", "device", "task_cache", "init"})
_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Method:
    name: str
    path: str
    results: Mapping[str, Any]

    @property
    def label(self) -> str:
        return METHODS.get(self.name, self.name)

    @property
    def commit(self) -> str | None:
        return self.results.get("environment", {}).get("commit")


class Interval(NamedTuple):
    estimate: float
    low: float | None  # None: undefined (a single run)
    high: float | None
    n: int  # runs (t) or resampled items (bootstrap)


class Value(NamedTuple):
    method: str
    task: str
    protocol: str
    metric: str
    scoring: str
    mean: float  # over runs
    std: float
    pooled: float
    n_runs: int


class Difference(NamedTuple):
    minuend: str
    subtrahend: str
    task: str
    protocol: str
    metric: str
    scoring: str
    t: Interval
    bootstrap: Interval


@dataclass
class Comparison:
    methods: list[Method]
    baseline: str
    values: list[Value] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    levels: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (task, protocol, scoring) -> level
    notes: list[str] = field(default_factory=list)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def load_method(path: str | Path, name: str | None = None) -> Method:
    """An evaluation JSON (strict: ``NaN`` refused), named ``name`` or by its file (``eval_uscl.json``: uscl)."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise EvaluationError(f"{path}: not a strict JSON evaluation result ({err}); evaluate it again") from None
    if not isinstance(results, dict) or "tasks" not in results or "config" not in results:
        raise EvaluationError(f"{path}: not a `timm-uscl evaluate --out` result (no tasks/config)")
    stem = path.stem
    return Method(name or (stem[5:] if stem.startswith("eval_") else stem), str(path), results)


# --- statistics ---------------------------------------------------------------------------------------------


def _t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4, exact finite series)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, 1.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total) if df > 1 else 2 * theta / math.pi
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t critical value: P(|T| <= q) = ``confidence`` (e.g. 2.776 for 0.95, df 4)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    low, high = 0.0, 1.0
    while _t_two_sided_cdf(high, df) < confidence:
        high *= 2
    for _ in range(100):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_two_sided_cdf(mid, df) < confidence else (low, mid)
    return (low + high) / 2


def t_interval(values: Sequence[float], confidence: float = _CONFIDENCE) -> Interval:
    """Mean ± t·sd/√n (sd with ddof 1); no interval for a single value."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if len(v) < 2:
        return Interval(mean, None, None, len(v))
    half = t_quantile(confidence, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return Interval(mean, mean - half, mean + half, len(v))


def _metric(stats: np.ndarray, metric: str, n_classes: int) -> np.ndarray:
    """A metric from summed statistics [..., S]: a flattened confusion matrix (rows: truth) for classification,
    (sum of Dice, count) for segmentation. Macro-F1 scores a class never true nor predicted 0, as sklearn's
    ``zero_division=0`` with every class listed (the evaluation's per-run figure)."""
    if metric == "dice":
        return stats[..., 0] / np.maximum(stats[..., 1], 1)
    conf = stats.reshape(*stats.shape[:-1], n_classes, n_classes)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    total = conf.sum((-2, -1))
    if metric == "accuracy":
        return tp.sum(-1) / np.maximum(total, 1)
    predicted, actual = conf.sum(-2), conf.sum(-1)
    precision = np.divide(tp, predicted, out=np.zeros(tp.shape), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(tp.shape), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(tp.shape), where=denom > 0)
    return f1.mean(-1)


class _Scored(NamedTuple):
    """One method's predictions of one task, protocol and scoring, reduced to what the statistics need."""

    per_run: dict[tuple[int, int | None], np.ndarray]  # (fold, seed) -> summed statistics of that run
    per_item: np.ndarray  # [n_items, S]: each item's statistics summed over its frames and runs
    level: str


def _scored(runs: Sequence[Mapping[str, Any]], key: str, kind: str, n_classes: int, n_items: int) -> _Scored:
    width = 2 if kind == "segmentation" else n_classes * n_classes
    per_run: dict[tuple[int, int | None], np.ndarray] = {}
    per_item = np.zeros((n_items, width))
    level = ""
    for run in runs:
        p = run["predictions"][key]
        level, items = p["level"], np.asarray(p["item"], dtype=int)
        if kind == "segmentation":
            unit = np.stack([np.asarray(p["dice"], dtype=float), np.ones(len(items))], 1)
        else:
            cell = np.asarray(p["y"], dtype=int) * n_classes + np.asarray(p["pred"], dtype=int)
            unit = np.zeros((len(items), width))
            unit[np.arange(len(items)), cell] = 1
        np.add.at(per_item, items, unit)
        per_run[(int(run["fold"]), run["seed"])] = unit.sum(0)
    return _Scored(per_run, per_item, level)


# --- what may be paired -------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_config(a: Method, b: Method) -> None:
    # results written before the precision was recorded ran in fp32
    ca, cb = ({"precision": "fp32", **m.results["config"]} for m in (a, b))
    for key in sorted((set(ca) | set(cb)) - _IGNORED_CONFIG):
        if ca.get(key) != cb.get(key):
            raise EvaluationError(
                f"{a.path} and {b.path} were evaluated with different {key} ({_describe(ca.get(key))} vs "
                f"{_describe(cb.get(key))}): only results of one evaluation setting are paired; evaluate both alike"
            )


def _run_key(run: Mapping[str, Any]) -> tuple[int, int | None]:
    return int(run["fold"]), run.get("seed")


def _check_task(a: Method, b: Method, task: str) -> None:
    ta, tb = a.results["tasks"].get(task), b.results["tasks"].get(task)
    if ta is None or tb is None:
        missing = a if ta is None else b
        raise EvaluationError(f"{missing.path}: no task {task!r}; pair only results of the same tasks")
    for key in ("kind", "classes", "items"):
        if ta.get(key) != tb.get(key):
            raise EvaluationError(
                f"{a.path} and {b.path}: task {task!r} differs in its {key} (different data); pair only results "
                "evaluated on the same data"
            )
    for proto in set(ta["protocols"]) | set(tb["protocols"]):
        pa, pb = ta["protocols"].get(proto), tb["protocols"].get(proto)
        if pa is None or pb is None:
            raise EvaluationError(f"{a.path} and {b.path}: task {task!r} was not evaluated with {proto!r} in both")
        if [_run_key(r) for r in pa["folds"]] != [_run_key(r) for r in pb["folds"]]:
            raise EvaluationError(
                f"{a.path} and {b.path}: task {task!r} {proto} ran different folds or seeds; evaluate both alike"
            )
        for ra, rb in zip(pa["folds"], pb["folds"]):
            if "predictions" not in ra or "predictions" not in rb:
                old = a if "predictions" not in ra else b
                raise EvaluationError(
                    f"{old.path}: no per-item predictions (written by an older timm-uscl); evaluate it again"
                )
            for scoring in ("final", "optimistic"):
                xa, xb = ra["predictions"][scoring], rb["predictions"][scoring]
                if xa["item"] != xb["item"] or xa.get("y") != xb.get("y"):
                    raise EvaluationError(
                        f"{a.path} and {b.path}: task {task!r} {proto} fold {ra['fold']} tested different items "
                        "(different data); pair only results evaluated on the same data"
                    )


def _provenance_notes(methods: Sequence[Method], allow_mixed_commits: bool) -> list[str]:
    notes = []
    commits = {m.name: m.commit for m in methods}
    if len(set(commits.values())) > 1:
        listed = ", ".join(f"{name} {str(c)[:12] if c else 'unknown'}" for name, c in commits.items())
        if not allow_mixed_commits:
            raise EvaluationError(
                f"the results come from different code commits ({listed}); evaluate them with one commit, or pass "
                "--allow-mixed-commits to compare them anyway (flagged in the output)"
            )
        notes.append(f"**Different code commits** ({listed}): differences may include changes of the code.")
    dirty = [m.name for m in methods if m.commit and m.commit.endswith("-dirty")]
    if dirty:
        notes.append(f"Evaluated from a modified work tree (commit `-dirty`): {', '.join(dirty)}.")
    return notes


# --- the comparison -----------------------------------------------------------------------------------------


def _pairs(methods: Sequence[Method], baseline: str | None, pairs: Sequence[tuple[str, str]]) -> tuple[str, list]:
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise EvaluationError(f"two results share a name ({names}); rename a file (eval_<method>.json)")
    if baseline is None:
        random = [m.name for m in methods if m.results.get("pretrained") is False]
        if "random" in names:
            baseline = "random"
        elif len(random) == 1:
            baseline = random[0]
        else:
            raise EvaluationError(f"which result is the baseline? pass --baseline NAME, one of {names}")
    for name in (baseline, *(n for pair in pairs for n in pair)):
        if name not in names:
            raise EvaluationError(f"no result named {name!r}; the results are {names} (from their file names)")
    out = [(n, baseline) for n in names if n != baseline]
    out += [p for p in (*NAMED_PAIRS, *pairs) if p[0] in names and p[1] in names and p[0] != p[1]]
    return baseline, list(dict.fromkeys(out))


def compare(
    methods: Sequence[Method],
    *,
    baseline: str | None = None,
    pairs: Sequence[tuple[str, str]] = (),
    n_boot: int = 2000,
    seed: int = 0,
    allow_mixed_commits: bool = False,
) -> Comparison:
    """Every method minus ``baseline`` (default: ``random``, or the one result without pretrained weights), the
    named pairs present (Meta-USCL − USCL, Meta-USCL − SimCLR) and ``pairs``, for every task, protocol, metric
    (accuracy and macro-F1, or Dice) and scoring. The bootstrap is seeded (``seed``): the output is reproducible."""
    if len(methods) < 2:
        raise EvaluationError("give at least two evaluation results to compare")
    baseline, todo = _pairs(methods, baseline, pairs)
    first = methods[0]
    for other in methods[1:]:
        _check_config(first, other)
    tasks = list(first.results["tasks"])
    for other in methods[1:]:
        if sorted(other.results["tasks"]) != sorted(tasks):
            raise EvaluationError(f"{first.path} and {other.path} hold different tasks; evaluate both alike")
        for task in tasks:
            _check_task(first, other, task)
    out = Comparison(list(methods), baseline, notes=_provenance_notes(methods, allow_mixed_commits))
    for task in tasks:
        for proto in first.results["tasks"][task]["protocols"]:
            _compare_protocol(out, task, proto, todo, n_boot=n_boot, seed=seed)
    return out


def _compare_protocol(
    out: Comparison, task: str, proto: str, todo: Sequence[tuple[str, str]], *, n_boot: int, seed: int
) -> None:
    """Values and differences of one task and protocol, appended to ``out``. One set of bootstrap resamples serves
    every method, pair, metric and scoring (drawn from ``seed`` alone: the order of the results does not matter)."""
    res = out.methods[0].results["tasks"][task]
    kind, n_classes, n_items = res["kind"], len(res["classes"]), len(res["items"])
    weights = np.random.default_rng(seed).multinomial(n_items, np.full(n_items, 1 / n_items), size=n_boot)
    for scoring, (key, _) in SCORINGS.items():
        scored = {
            m.name: _scored(m.results["tasks"][task]["protocols"][proto]["folds"], key, kind, n_classes, n_items)
            for m in out.methods
        }
        out.levels[(task, proto, scoring)] = scored[out.methods[0].name].level
        for metric in ("dice",) if kind == "segmentation" else ("accuracy", "macro_f1"):

            def score(stats: np.ndarray, metric: str = metric) -> np.ndarray:
                return _metric(stats, metric, n_classes)

            for name, s in scored.items():
                per_run = [float(score(v)) for v in s.per_run.values()]
                std = float(np.std(per_run, ddof=1)) if len(per_run) > 1 else 0.0
                pooled = float(score(s.per_item.sum(0)))
                out.values.append(
                    Value(name, task, proto, metric, scoring, float(np.mean(per_run)), std, pooled, len(per_run))
                )
            for a, b in todo:
                sa, sb = scored[a], scored[b]
                run_diff = [float(score(sa.per_run[k]) - score(sb.per_run[k])) for k in sa.per_run]
                point = float(score(sa.per_item.sum(0)) - score(sb.per_item.sum(0)))
                boot = score(weights @ sa.per_item) - score(weights @ sb.per_item)
                low, high = np.quantile(boot, [(1 - _CONFIDENCE) / 2, (1 + _CONFIDENCE) / 2])
                bootstrap = Interval(point, float(low), float(high), n_items)
                out.differences.append(Difference(a, b, task, proto, metric, scoring, t_interval(run_diff), bootstrap))


# --- markdown -----------------------------------------------------------------------------------------------


def _points(x: float | None, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def _interval(iv: Interval) -> str:
    if iv.low is None or iv.high is None:
        return f"{_points(iv.estimate, True)} (n {iv.n})"
    text = f"{_points(iv.estimate, True)} [{_points(iv.low, True)}, {_points(iv.high, True)}]"
    return f"**{text}**" if iv.low > 0 or iv.high < 0 else text


def _setting(results: Mapping[str, Any]) -> str:
    cfg = results["config"]
    epochs = cfg.get("task_epochs") or {}
    per_task = ", ".join(
        f"{t} {epochs.get(t, results['tasks'][t].get('epochs', cfg['epochs']))}" for t in results["tasks"]
    )
    return (
        f"budget `{cfg.get('budget')}`, folds {cfg['folds']}, seeds {cfg.get('run_seeds', [cfg['seed']])}, "
        f"{cfg['image_size']}² px, {cfg['frames_per_video']} frames/video, {cfg.get('precision', 'fp32')}, epochs "
        f"{per_task}, epoch chosen by "
        f"`{cfg['select']}`" + (f", at most {cfg['max_items']} items per fold" if cfg.get("max_items") else "")
    )


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as markdown: the setting and provenance, each method's values, then the paired differences
    (percentage points; bold where the 95 % interval excludes 0)."""
    methods = comparison.methods
    label = {m.name: m.label for m in methods}
    lines = [
        f"Paired comparison of {', '.join(f'{m.label} (`{m.path}`)' for m in methods)}; baseline: "
        f"{label[comparison.baseline]}.",
        "",
        f"Evaluation: {_setting(methods[0].results)}. Code: "
        + ", ".join(f"{m.name} `{str(m.commit)[:12] if m.commit else 'unknown'}`" for m in methods)
        + ".",
        "",
        *(f"> {note}" for note in comparison.notes),
        *([""] if comparison.notes else []),
        "Scorings: *ours* = each run's reported epoch, video level (image level for images); *reference* = each "
        "run's best epoch picked on its test fold, frame level, pooled: **optimistic**, for comparison with "
        "published figures only. Runs are folds × seeds (the linear probe: folds).",
        "",
        "| method | task | protocol | metric | scoring | mean ± std over runs | pooled |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for v in comparison.values:
        level = comparison.levels[(v.task, v.protocol, v.scoring)]
        lines.append(
            f"| {label[v.method]} | {v.task} | {v.protocol} | {v.metric} | {v.scoring} ({level}) "
            f"| {_points(v.mean)} ± {_points(v.std)} | {_points(v.pooled)} |"
        )
    lines += [
        "",
        "Differences in percentage points: mean over runs with its 95 % t-interval (n runs), and the pooled "
        "difference with the 95 % interval of a paired bootstrap over the videos / images (n items); bold: the "
        "interval excludes 0.",
        "",
        "| difference | task | protocol | metric | scoring | mean over runs [95 % t] | n runs "
        "| pooled [95 % bootstrap] | n items |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for d in comparison.differences:
        level = comparison.levels[(d.task, d.protocol, d.scoring)]
        lines.append(
            f"| {label[d.minuend]} − {label[d.subtrahend]} | {d.task} | {d.protocol} | {d.metric} "
            f"| {d.scoring} ({level}) | {_interval(d.t)} | {d.t.n} | {_interval(d.bootstrap)} | {d.bootstrap.n} |"
        )
    return "\n".join(lines) + "\n"
