"""Downstream evaluation: a backbone on fixed, leak-free folds of lung and breast ultrasound tasks.

One module per idea: :mod:`.tasks` (which files, labels, groups and folds), :mod:`.metadata` (strict CSV
reading), :mod:`.decoding` (files into grey uint8 rows), :mod:`.task_cache` (decoded tasks on disk),
:mod:`.task_dir` (your own folder as a task), :mod:`.backbone` and :mod:`.exported` (what is evaluated),
:mod:`.fitting` (the shared fine-tune loop and epoch choice), :mod:`.protocols` (fine-tune, linear probe, U-Net),
:mod:`.metrics` (scores, mean ± std, the reference-style figure, markdown), :mod:`.predictions` and
:mod:`.plots` (per-item CSV tables and plots of a result), :mod:`.run` (``evaluate``),
:mod:`.online` (the trainer's every-N-epochs probe), :mod:`.repro` (the method x task table) and
:mod:`.config` (settings; import-light). The names below are imported lazily.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "evaluate": ".run",
    "results_to_markdown": ".metrics",
    "card_results": ".metrics",
    "write_plots": ".plots",
    "EvalConfig": ".config",
    "OnlineEvaluator": ".online",
    "PROTOCOLS": ".config",
    "DEFAULT_TASKS": ".config",
    "TASKS": ".tasks",
    "EvaluationError": "..errors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
