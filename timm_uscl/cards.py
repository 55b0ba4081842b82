"""Model and dataset cards, rendered from the jinja2 templates in ``hub_cards/``.

A model card describes the weights file beside it: it is rendered from the export's own record (see
:mod:`timm_uscl.record`), and shows only results measured on exactly that file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import jinja2
from huggingface_hub import EvalResult as HubEvalResult
from huggingface_hub import ModelCardData

from .record import results_for
from .weights import EvalResult, WeightsEntry

__all__ = ["render", "render_model_card", "card_metadata", "results_table", "run_table", "percent"]

_TASK_TYPES = {"segmentation": "image-segmentation"}


def render(template_name: str, **context: Any) -> str:
    """Render ``hub_cards/<template_name>`` (strict: an undefined name is an error, not a blank)."""
    source = resources.files("timm_uscl.hub_cards").joinpath(template_name).read_text(encoding="utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True
    )
    return env.from_string(source).render(**context)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def card_metadata(entry: WeightsEntry, results: tuple[EvalResult, ...] = ()) -> str:
    """The card's YAML header, with a model-index when there are results (measured on these weights)."""
    eval_results = [
        HubEvalResult(
            task_type=next((t for k, t in _TASK_TYPES.items() if k in r.task.lower()), "image-classification"),
            task_name=r.task,
            dataset_type=_slug(r.dataset),
            dataset_name=r.dataset,
            metric_type=r.metric,
            metric_value=round(r.value, 4),
            metric_name=f"{r.metric} ({r.protocol})" if r.protocol else r.metric,
        )
        for r in results
    ]
    data = ModelCardData(
        library_name="timm",
        license=entry.license,
        tags=[
            "timm",
            "image-feature-extraction",
            "ultrasound",
            "medical-imaging",
            "self-supervised",
            "contrastive-learning",
            "timm-uscl",
        ],
        datasets=list(entry.datasets) or None,
        pipeline_tag="image-feature-extraction",
        model_name=entry.name,
        eval_results=eval_results or None,
    )
    return data.to_yaml()


def percent(mean: float | None, std: float | None = None) -> str:
    """A ratio as the cards and tables print it: ``57.2 ± 9.7`` (percent, std over folds), ``–`` when unknown."""
    if mean is None or math.isnan(mean):
        return "–"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def results_table(results: tuple[EvalResult, ...]) -> str:
    """A markdown table of evaluation results (mean ± std over folds where known)."""
    if not results:
        return (
            "_No evaluation results recorded for these weights. Measure them with `timm-uscl evaluate "
            "local-dir:EXPORT --card EXPORT`._"
        )
    rows = ["| task | dataset | metric | value | protocol | source |", "|---|---|---|---|---|---|"]
    for r in results:
        rows.append(
            f"| {r.task} | {r.dataset} | {r.metric} (%) | {percent(r.value, r.std)} | {r.protocol} | {r.source} |"
        )
    return "\n".join(rows)


def run_table(run: tuple[tuple[str, str], ...]) -> str:
    """The facts of the training run that produced the weights, as a two-column markdown table."""
    if not run:
        return ""
    cells = [(key.replace("|", "\\|"), value.replace("|", "\\|")) for key, value in run]
    return "\n".join(["| fact | value |", "|---|---|", *(f"| {key} | {value} |" for key, value in cells)])


def _papers(paper_ids: tuple[str, ...]) -> str:
    """``arxiv:2212.04097`` ids as arXiv links (the Hub links a model to a paper by the arXiv id in its card)."""
    links = []
    for paper in paper_ids:
        kind, _, number = paper.partition(":")
        links.append(f"[arXiv:{number}](https://arxiv.org/abs/{number})" if kind == "arxiv" else paper)
    return ", ".join(links)


def _size(size: Mapping[str, Any] | None) -> str:
    if not size:
        return ""
    side = size["image_size"]
    macs = f"{size['gmacs']:.2f} GMACs at {side}×{side} (conv and linear layers)"
    return f"{size['params'] / 1e6:.1f} M parameters, {macs}"


def _made_with(software: Mapping[str, Any] | None) -> str:
    if not software:
        return ""
    commit = software.get("commit")
    return f"timm-uscl {software['timm_uscl']}" + (f" (commit `{commit}`)" if commit else "")


def render_model_card(
    entry: WeightsEntry,
    arch: str,
    sha256: str,
    *,
    software: Mapping[str, Any] | None = None,
    size: Mapping[str, Any] | None = None,
) -> str:
    """The README.md of an export: metadata, usage, preprocessing, size, data and licences, results, papers.

    Only results measured on the file with this ``sha256`` are shown (:func:`timm_uscl.record.results_for`).
    """
    results = results_for(entry, sha256)
    return render(
        "model_card.md.j2",
        metadata=card_metadata(entry, results),
        entry=entry,
        arch=arch,
        sha256=sha256,
        run=run_table(entry.run),
        results=results_table(results),
        mean=entry.mean[0],
        std=entry.std[0],
        size=entry.input_size[-1],
        papers=_papers(entry.paper_ids),
        model_size=_size(size),
        made_with=_made_with(software),
    )
