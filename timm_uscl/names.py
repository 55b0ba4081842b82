"""Names of weights: the built-in tags of the weights table, the user's own tags, and each architecture's default.

Why a user tag: a training run, an export of a weights file or a conversion is the user's own weights, and naming
it after a built-in tag (``metauscl_covidblues_64``) made its card, ``timm-uscl list`` and a later
``create_model`` describe it as the project's weights. A user tag is ``<arch>.<tag>`` with a tag of
:data:`TAG_RULE`; a built-in tag names only the weights its row describes (:func:`check_builtin_weights`).

The default tag of a bare architecture name is fixed, as in timm (its first pretrained tag): the first row of the
architecture in the weights table, whatever happens to be installed.
"""

from __future__ import annotations

import re

from .archs import ARCHITECTURES
from .errors import UnknownWeightsError
from .weights import WEIGHTS, WeightsEntry

__all__ = [
    "TAG_RULE",
    "DEFAULT_TAGS",
    "check_user_tag",
    "check_user_name",
    "is_builtin",
    "safe_tag",
    "check_builtin_weights",
    "user_entry",
    "entry_for",
    "NOT_RECORDED",
]

_TAG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_BUILTIN_TAGS = tuple(dict.fromkeys(row.tag for row in WEIGHTS.values()))
TAG_RULE = (
    "a tag is 1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit, and is not a built-in "
    f"tag ({', '.join(_BUILTIN_TAGS)})"
)

# The first row of each architecture in the weights table (table order is the default order, as in timm).
DEFAULT_TAGS: dict[str, str] = {}
for _row in WEIGHTS.values():
    DEFAULT_TAGS.setdefault(_row.arch, _row.tag)


def is_builtin(name: str) -> bool:
    """True for ``<arch>.<tag>`` names of the weights table."""
    return name in WEIGHTS


def check_user_tag(tag: str, what: str = "tag") -> str:
    """The tag itself when it is a valid user tag (:data:`TAG_RULE`), else a one-line error stating the rule."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or tag in _BUILTIN_TAGS:
        raise UnknownWeightsError(f"{what} {tag!r} is not a valid user tag: {TAG_RULE}")
    return tag


def check_user_name(name: str) -> tuple[str, str]:
    """``(arch, tag)`` of a user's ``<arch>.<tag>`` name: a plugin architecture and a valid user tag."""
    arch, dot, tag = name.partition(".")
    if not dot or arch not in ARCHITECTURES:
        raise UnknownWeightsError(
            f"{name!r} is not a weights name: write <arch>.<tag> with arch one of {', '.join(ARCHITECTURES)} "
            f"(e.g. resnet18_uscl.my_run); {TAG_RULE}"
        )
    return arch, check_user_tag(tag)


def safe_tag(text: str) -> str:
    """A valid user tag made from free text (a run folder's name): lower case, other characters as ``_``; a name
    that would be a built-in tag or empty gets a ``run_`` prefix."""
    tag = re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_-")[:60]
    return tag if tag and _TAG.fullmatch(tag) and tag not in _BUILTIN_TAGS else f"run_{tag}".rstrip("_")


def check_builtin_weights(entry: WeightsEntry, sha256: str) -> None:
    """A built-in tag names only its own weights: those whose sha256 the row records. A row without a recorded
    sha256 (not published yet) cannot be claimed by arbitrary weights: name them with your own tag."""
    if entry.sha256 is None or entry.sha256 != sha256:
        recorded = f"sha256 {entry.sha256}" if entry.sha256 else "no sha256 yet (not published)"
        raise UnknownWeightsError(
            f"{entry.name} is a built-in tag whose weights have {recorded}; these weights (sha256 {sha256}) are "
            f"not those: name them with your own tag, e.g. {entry.arch}.my_weights ({TAG_RULE})"
        )


NOT_RECORDED = "not recorded"
UNKNOWN_DATA_LICENSE = "not recorded: check the licence of the data these weights were trained on before sharing them"


def user_entry(
    name: str,
    *,
    description: str = "",
    input_size: tuple[int, int, int] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    recipe: str = NOT_RECORDED,
    pretrain_data: str = NOT_RECORDED,
    pretrain_data_license: str = UNKNOWN_DATA_LICENSE,
    license: str = "unknown",
    origin: str = "trainer",
    run: tuple[tuple[str, str], ...] = (),
    datasets: tuple[str, ...] = (),
) -> WeightsEntry:
    """The card facts of the user's own weights under ``<arch>.<tag>``: what the caller knows, "not recorded" for
    the rest (never a built-in row's text). Preprocessing not given is that of the architecture's default tag, the
    statistics the plugin's recipes train with; the Hub repo is unknown until ``timm-uscl push`` names it."""
    arch, tag = check_user_name(name)
    default = WEIGHTS[f"{arch}.{DEFAULT_TAGS[arch]}"]
    return WeightsEntry(
        arch=arch,
        tag=tag,
        description=description or f"{arch.split('_')[0]} weights of the user tag {tag}, exported with timm-uscl",
        input_size=input_size or default.input_size,
        mean=mean or default.mean,
        std=std or default.std,
        recipe=recipe,
        pretrain_data=pretrain_data,
        pretrain_data_license=pretrain_data_license,
        origin="converted" if origin == "converted" else "trainer",
        how_to_obtain="",
        license=license,
        hub_repo="",
        run=run,
        datasets=datasets,
    )


def entry_for(name: str) -> WeightsEntry:
    """The row of a built-in name, else the default facts of a user name (validated: one line with the rule)."""
    return WEIGHTS[name] if is_builtin(name) else user_entry(name)
