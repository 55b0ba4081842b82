"""THE weights table: one row per pretrained tag, and the only place those facts live.

The timm registry (:mod:`timm_uscl.uscl`), the model cards (:mod:`timm_uscl.cards`) and
``timm-uscl list`` are all generated from :data:`WEIGHTS`. To publish a tag: push its export
(``timm-uscl push``), then copy the printed revision and sha256 into its row and set
``published=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
from typing import Literal, NamedTuple

from .errors import UnknownWeightsError

__all__ = [
    "HUB_NAMESPACE",
    "DataFacts",
    "KNOWN_DATA",
    "EvalResult",
    "WeightsEntry",
    "WEIGHTS",
    "get_weights",
    "list_weights",
    "with_publication",
]

HUB_NAMESPACE = "timm-uscl"

# Normalization statistics of the original recipes (never ImageNet's): ultrasound frames are dark.
METAUSCL_MEAN, METAUSCL_STD = (0.18,) * 3, (0.24,) * 3
USCL_MEAN, USCL_STD = (0.5,) * 3, (0.25,) * 3

META_USCL_PAPER = "arxiv:2212.04097"
USCL_PAPER = "arxiv:2011.13066"


@dataclass(frozen=True)
class EvalResult:
    """One measured downstream number; rendered into the card's table and model-index."""

    task: str  # e.g. "POCUS 3-class classification"
    dataset: str  # dataset name as shown in the card
    metric: str  # e.g. "accuracy", "macro_f1", "dice"
    value: float  # in [0, 1] for ratios
    std: float | None = None  # across folds
    protocol: str = ""  # e.g. "fine-tune last block, 5 folds, final epoch"
    source: str = "measured"  # "measured: ..." (on weights of a known sha256), or where the number was read

    @property
    def measured(self) -> bool:
        """Measured by timm-uscl (as opposed to a figure reported elsewhere, e.g. the authors' README)."""
        return self.source.startswith("measured")


@dataclass(frozen=True)
class WeightsEntry:
    """Everything known about one pretrained tag ``<arch>.<tag>``."""

    arch: str  # registered plugin architecture, e.g. "resnet18_uscl"
    tag: str
    description: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipe: str  # how the weights were produced
    pretrain_data: str
    pretrain_data_license: str
    origin: Literal["trainer", "converted"]
    how_to_obtain: str  # shown while the tag is unpublished
    license: str = "mit"
    paper_ids: tuple[str, ...] = (META_USCL_PAPER, USCL_PAPER)
    hub_repo: str | None = None  # defaults to "timm-uscl/<arch>.<tag>"; "" for a user's weights not pushed yet
    revision: str | None = None  # 40-hex commit, pinned when published
    filename: str = "model.safetensors"
    sha256: str | None = None
    published: bool = False
    results: tuple[EvalResult, ...] = field(default_factory=tuple)
    datasets: tuple[str, ...] = ()  # Hub dataset ids for the card's metadata
    # sha256 of the weights file the MEASURED results were measured on: a card shows them only for that file
    results_sha256: str | None = None
    run: tuple[tuple[str, str], ...] = ()  # facts about the run that made the weights (the card's "Training run")

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def repo_id(self) -> str:
        return self.hub_repo if self.hub_repo is not None else f"{HUB_NAMESPACE}/{self.name}"

    @property
    def pinned_repo_id(self) -> str:
        """``repo@revision`` as timm's ``hf_hub_id`` understands it (revision only once published)."""
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


_COVID_BLUES = (
    "COVID-BLUES lung ultrasound videos (Wiedemann et al. 2025; 362 videos, 63 patients), "
    "streamed from the Hub dataset jannisborn/COVID-BLUES"
)
_COVID_BLUES_LICENSE = (
    "CC BY-NC-ND 4.0 (attribution, non-commercial, no derivatives): the weights inherit the non-commercial term, and "
    "whether trained weights are an adaptation under the no-derivatives term is unresolved: clear it with the data "
    "owners before sharing them"
)
# The Hub licence id of weights trained on COVID-BLUES: the data's own terms, stated as they are (not plain
# cc-by-nc-4.0, which would drop the no-derivatives term without a word).
COVID_BLUES_WEIGHTS_LICENSE = "cc-by-nc-nd-4.0"


@dataclass(frozen=True)
class DataFacts:
    """What a card says about a known pretraining dataset: its description, its licence terms as they are, and the
    Hub licence id of weights trained on it."""

    hub_id: str
    description: str
    license_terms: str
    weights_license: str


# Datasets whose terms the project knows; a trainer run on any other data says its licence was not checked.
KNOWN_DATA: dict[str, DataFacts] = {
    "jannisborn/COVID-BLUES": DataFacts(
        "jannisborn/COVID-BLUES", _COVID_BLUES, _COVID_BLUES_LICENSE, COVID_BLUES_WEIGHTS_LICENSE
    ),
}

_US4 = "US-4 (Butterfly, CLUST, Liver Fibrosis, COVID19-LUSMS; 1051 videos) - the authors' private corpus"
_US4_LICENSE = "not released (only Butterfly is public); weights are MIT per the authors' repository"
_OWN = (
    "Produce them with `timm-uscl pretrain` (see README: reproduction) and load the export with "
    "timm.create_model('local-dir:EXPORT'), or push them with `timm-uscl push`."
)
_CONVERT = (
    "No public copy is hosted (the authors' Google Drive link is dead). If you have the file, convert it: "
    "`timm-uscl convert {file} --arch resnet18 --out EXPORT`, then "
    "timm.create_model('local-dir:EXPORT', pretrained=True)."
)


# The weights these were measured on were never kept, so their sha256 is unknown: the rows leave results_sha256
# None and no export card ever shows these numbers (they stay here and in benchmarks/RESULTS.md).
_CPU_BUDGET = "measured: scripts/reproduce.sh at the CPU budget (20 pretraining epochs), benchmarks/RESULTS.md"


_EVAL = ", 5 folds, 64px, 5 epochs, epoch by final"


class _Score(NamedTuple):
    """A measured figure over folds."""

    mean: float
    std: float


class _Benchmark(NamedTuple):
    """One column of the CPU-budget benchmark: what was measured, how."""

    task: str
    dataset: str
    metric: str
    protocol: str


_POCUS = "POCUS convex 3-class, 112 videos, 5 patient-grouped folds"
_BUSI = "BUSI 3-class, 780 images, 5 folds grouped by near-duplicate cluster"


class _CpuResults(NamedTuple):
    """The reproduction at the CPU budget, one ``_Score`` per benchmark column (video-level accuracy for
    POCUS); what each column measures is in ``_BENCHMARKS``."""

    pocus_ft: _Score
    pocus_linear: _Score
    busi_ft: _Score
    busi_linear: _Score
    busi_dice: _Score


_BENCHMARKS: dict[str, _Benchmark] = {  # _CpuResults' columns: what each one measures
    "pocus_ft": _Benchmark(_POCUS, "pocus", "accuracy", "fine-tune last block"),
    "pocus_linear": _Benchmark(_POCUS, "pocus", "accuracy", "linear probe"),
    "busi_ft": _Benchmark(_BUSI, "busi", "accuracy", "fine-tune all"),
    "busi_linear": _Benchmark(_BUSI, "busi", "accuracy", "linear probe"),
    "busi_dice": _Benchmark(
        "BUSI lesion segmentation (U-Net), 780 images, 5 grouped folds", "busi_seg", "dice", "U-Net fine-tune"
    ),
}


def _cpu_results(scores: _CpuResults) -> tuple[EvalResult, ...]:
    columns = [(_BENCHMARKS[name], score) for name, score in scores._asdict().items()]
    return tuple(
        EvalResult(b.task, b.dataset, b.metric, s.mean, s.std, b.protocol + _EVAL, _CPU_BUDGET) for b, s in columns
    )


def _own(
    arch: str,
    method: str,
    size: int,
    *,
    recipe: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    results: tuple[EvalResult, ...] = (),
) -> WeightsEntry:
    return WeightsEntry(
        arch=arch,
        tag=f"{method}_covidblues_{size}",
        description=f"{arch.split('_')[0]} pretrained with {recipe.split(':')[0]} on COVID-BLUES videos at {size}px",
        input_size=(3, size, size),
        mean=mean,
        std=std,
        recipe=recipe,
        pretrain_data=_COVID_BLUES,
        pretrain_data_license=_COVID_BLUES_LICENSE,
        origin="trainer",
        how_to_obtain=_OWN,
        license=COVID_BLUES_WEIGHTS_LICENSE,
        datasets=("jannisborn/COVID-BLUES",),
        results=results,
    )


_METAUSCL_RECIPE = (
    "Meta-USCL: PPG pairs (3 frames, Beta(3,5) mixing before augmentation) + CMW-Net weighting with an exact "
    "one-step lookahead; SGD lr 0.1 momentum 0.9 wd 1e-4, batch 32 videos, 10-epoch warm-up + cosine; "
    "NT-Xent tau 0.5; timm-uscl trainer"
)
_USCL_RECIPE = (
    "USCL: 3 frames augmented then mixed with one lambda ~ Beta(0.5,0.5); Adam 3e-4 wd 1e-4; NT-Xent tau 0.5; "
    "timm-uscl trainer"
)
_SIMCLR_RECIPE = (
    "SimCLR: one frame augmented twice; SGD as Meta-USCL without CMW-Net; NT-Xent tau 0.5; timm-uscl trainer"
)


def _authors(size: int) -> WeightsEntry:
    return WeightsEntry(
        arch="resnet18_uscl",
        tag=f"metauscl_us4_{size}",
        description=f"ResNet-18 Meta-USCL weights of the original authors (Chen et al. 2022), {size}px",
        input_size=(3, size, size),
        mean=METAUSCL_MEAN,
        std=METAUSCL_STD,
        recipe=f"Meta-USCL, original authors' code and checkpoint (resnet18_{size}.pth), 300 epochs",
        pretrain_data=_US4,
        pretrain_data_license=_US4_LICENSE,
        origin="converted",
        how_to_obtain=_CONVERT.format(file=f"resnet18_{size}.pth"),
        results=(
            EvalResult(
                task="POCUS 3-class classification",
                dataset="POCUS (authors' 5-fold split)",
                metric="accuracy",
                value={64: 0.909, 224: 0.946}[size],
                protocol="fine-tune last block, best epoch chosen on the test fold (optimistic)",
                source="reported in the Meta-USCL README, not reproduced here",
            ),
        ),
    )


_USCL_AUTHORS = WeightsEntry(
    arch="resnet18_uscl",
    tag="uscl_us4_224",
    description="ResNet-18 USCL weights of the original authors (Chen et al. 2021), 224px",
    input_size=(3, 224, 224),
    mean=USCL_MEAN,
    std=USCL_STD,
    recipe="USCL, original authors' code and checkpoint (best_model.pth), 300 epochs, semi-supervised",
    pretrain_data=_US4,
    pretrain_data_license=_US4_LICENSE,
    origin="converted",
    how_to_obtain=_CONVERT.format(file="best_model.pth").replace(
        "--arch resnet18", "--arch resnet18 --tag resnet18_uscl.uscl_us4_224"
    ),
    paper_ids=(USCL_PAPER,),
    results=(
        EvalResult(
            task="POCUS 3-class classification",
            dataset="POCUS (authors' 5-fold split)",
            metric="accuracy",
            value=0.9419,
            protocol="fine-tune last block, best epoch chosen on the test fold (optimistic)",
            source="reported in the USCL README, not reproduced here",
        ),
    ),
)

# Order matters: timm makes the first tag of an architecture its default.
_ROWS: tuple[WeightsEntry, ...] = (
    _authors(224),
    _authors(64),
    _USCL_AUTHORS,
    _own(
        "resnet18_uscl",
        "metauscl",
        64,
        recipe=_METAUSCL_RECIPE,
        mean=METAUSCL_MEAN,
        std=METAUSCL_STD,
        results=_cpu_results(
            _CpuResults(
                pocus_ft=_Score(0.57154, 0.09656),
                pocus_linear=_Score(0.66838, 0.19018),
                busi_ft=_Score(0.64615, 0.02373),
                busi_linear=_Score(0.59231, 0.02424),
                busi_dice=_Score(0.43907, 0.04547),
            )
        ),
    ),
    _own(
        "resnet18_uscl",
        "uscl",
        64,
        recipe=_USCL_RECIPE,
        mean=USCL_MEAN,
        std=USCL_STD,
        results=_cpu_results(
            _CpuResults(
                pocus_ft=_Score(0.60751, 0.06210),
                pocus_linear=_Score(0.73162, 0.11691),
                busi_ft=_Score(0.65128, 0.00731),
                busi_linear=_Score(0.51410, 0.01891),
                busi_dice=_Score(0.48721, 0.04778),
            )
        ),
    ),
    _own(
        "resnet18_uscl",
        "simclr",
        64,
        recipe=_SIMCLR_RECIPE,
        mean=METAUSCL_MEAN,
        std=METAUSCL_STD,
        results=_cpu_results(
            _CpuResults(
                pocus_ft=_Score(0.54466, 0.05622),
                pocus_linear=_Score(0.71462, 0.12664),
                busi_ft=_Score(0.66154, 0.01944),
                busi_linear=_Score(0.58333, 0.05068),
                busi_dice=_Score(0.44460, 0.03813),
            )
        ),
    ),
    _own(
        "resnet50_uscl",
        "metauscl",
        224,
        recipe=_METAUSCL_RECIPE,
        mean=METAUSCL_MEAN,
        std=METAUSCL_STD,
    ),
)

WEIGHTS: dict[str, WeightsEntry] = {row.name: row for row in _ROWS}


def get_weights(name: str) -> WeightsEntry:
    """The row of ``<arch>.<tag>``; a clear error listing the known tags otherwise."""
    try:
        return WEIGHTS[name]
    except KeyError:
        known = ", ".join(sorted(WEIGHTS))
        raise UnknownWeightsError(
            f"unknown pretrained tag {name!r}; known tags: {known}. See `timm-uscl list`."
        ) from None


def list_weights(pattern: str = "*") -> list[WeightsEntry]:
    """Rows whose ``<arch>.<tag>`` matches an fnmatch pattern, in table order."""
    return [row for row in WEIGHTS.values() if fnmatch(row.name, pattern)]


def with_publication(entry: WeightsEntry, revision: str, sha256: str) -> WeightsEntry:
    """The row as it reads once its export is pushed (what `timm-uscl push` tells you to record)."""
    return replace(entry, revision=revision, sha256=sha256, published=True)
