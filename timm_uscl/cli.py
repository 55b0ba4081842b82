"""The ``timm-uscl`` command line. Thin: parse, call a library function, print.

Plugin commands (list, export, convert, install, push, pull) need only the core install; the trainer's
commands (pretrain, evaluate, compare, publish-dataset) need the ``train`` extra and say so when it is missing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from fnmatch import fnmatch

from .archs import stock_architecture
from .convert import convert, read_state_dict, to_timm_state_dict
from .download import pull
from .errors import HubError, UnknownWeightsError, USCLError
from .export_folder import export
from .names import TAG_RULE, is_builtin, user_entry
from .outdir import check_out_dir
from .store import find_installed, installed, installed_entry
from .tensors import WeightsBudget
from .upload import push
from .uscl import install
from .weights import WeightsEntry, get_weights, list_weights

# the trainer's subcommands: import-light modules (argparse only) that load the trainer in their handlers
_TRAINING_COMMANDS = ("pretrain", "evaluate", "compare", "publish", "reproduce")


def _status(entry: WeightsEntry) -> str:
    found = find_installed(entry.name)
    if found is not None:
        return f"installed at {found.folder}" + (" (also published)" if entry.published else "")
    return "published" if entry.published else "not available"


def _yours(pattern: str) -> list[WeightsEntry]:
    """The user's own installed tags matching ``pattern``, described by their exports' records."""
    found = installed()
    return [installed_entry(found[name]) for name in found if not is_builtin(name) and fnmatch(name, pattern)]


def _cmd_list(args: argparse.Namespace) -> int:
    entries = list_weights(args.filter) + _yours(args.filter)
    rows = [("name", "status", "input", "mean/std", "licence", "pretraining data")]
    for e in entries:
        data = e.pretrain_data.split(" (")[0].split(",")[0]
        status = _status(e) if is_builtin(e.name) else f"yours, {_status(e)}"
        rows.append((e.name, status, f"{e.input_size[-1]}px", f"{e.mean[0]}/{e.std[0]}", e.license, data))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    missing = [e for e, row in zip(entries, rows[1:]) if row[1] == "not available"]
    if missing:
        print("\nhow to get the tags that are not available here:")
        for e in missing:
            print(f"  {e.name}: {e.how_to_obtain} Then, to load it by name: timm-uscl install EXPORT --tag {e.name}")
    return 0


def _announce_overwrite(out: str, overwrite: bool) -> None:
    """With --overwrite, say which files go before they go (the library removes exactly these)."""
    if overwrite:
        folder, stale = check_out_dir(out, overwrite=True)
        if stale:
            print(f"--overwrite: these {len(stale)} files of {folder} will be replaced: {', '.join(stale)}")


def _entry_of(args: argparse.Namespace, origin: str) -> WeightsEntry | str | None:
    """``--tag`` with the facts given on the command line: a user name becomes its entry (validated first, before
    any file is read); a built-in tag stays a name, and the facts flags do not apply to it."""
    given = {k: getattr(args, k) for k in _FACTS if getattr(args, k) is not None}
    if args.tag is None or is_builtin(args.tag):
        if given:
            raise UnknownWeightsError(
                f"--{next(iter(given)).replace('_', '-')} describes your own weights; a built-in tag carries its "
                f"row's facts: name yours with --tag <arch>.<your tag> ({TAG_RULE})"
            )
        return args.tag
    size = given.pop("image_size", None)
    for key in ("mean", "std"):
        if key in given:
            given[key] = (given[key],) * 3
    pretrain_data = given.pop("data", None)
    return user_entry(
        args.tag,
        origin=origin,
        input_size=(3, size, size) if size else None,
        **given,
        **({"pretrain_data": pretrain_data} if pretrain_data else {}),
    )


def _cmd_export(args: argparse.Namespace) -> int:
    entry = _entry_of(args, "trainer")
    arch = entry.arch if isinstance(entry, WeightsEntry) else get_weights(args.tag).arch
    budget = WeightsBudget.of(stock_architecture(arch))
    backbone, _, report = to_timm_state_dict(read_state_dict(args.weights, budget), label=args.weights)
    _announce_overwrite(args.out, args.overwrite)
    out = export(backbone, args.out, entry or args.tag, overwrite=args.overwrite, require_builtin_weights=True)
    print(f"exported {args.tag} to {out} ({report.summary()})")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    entry = _entry_of(args, "converted")
    _announce_overwrite(args.out, args.overwrite)
    report = convert(
        args.checkpoint, args.out, arch=args.arch, weights=entry, keep_head=args.keep_head, overwrite=args.overwrite
    )
    print(report.summary())
    print(f"wrote export folder {args.out}; load it with timm.create_model('local-dir:{args.out}', pretrained=True)")
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    folder = install(args.export_dir, args.tag, overwrite=args.overwrite)
    name = folder.name
    print(f"installed {name} at {folder}; load it by name: timm.create_model({name!r}, pretrained=True)")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    if args.public and args.private:
        raise HubError("--public and --private contradict each other: pick one")
    result = push(args.export_dir, args.repo_id, private=not args.public, dry_run=args.dry_run)
    verb = "would upload" if result.dry_run else "uploaded"
    where = "a PUBLIC repo" if args.public else "a private repo (unless it exists already)"
    print(f"{verb} to {result.repo_id}, {where}: {', '.join(result.files)}")
    if not result.dry_run:
        print(f"revision: {result.revision}")
    print(f"sha256 (model.safetensors): {result.sha256}")
    if not result.dry_run:
        print("record revision and sha256 in timm_uscl/weights.py and set published=True")
    return 0


def _cmd_pull(args: argparse.Namespace) -> int:
    for name, path in pull(args.tags, cache_dir=args.cache_dir, force=args.force).items():
        print(f"{name}: verified {path}")
    return 0


_FACTS = ("image_size", "mean", "std", "data", "pretrain_data_license", "license", "recipe")


def _add_facts(p: argparse.ArgumentParser) -> None:
    """What the card of your own weights says (a user --tag only): preprocessing, data and licences."""
    group = p.add_argument_group("facts of your own weights (the card; a user --tag only)")
    group.add_argument("--image-size", type=int, help="input size the weights were trained at (default 224)")
    group.add_argument("--mean", type=float, help="normalisation mean, every channel (default 0.18)")
    group.add_argument("--std", type=float, help="normalisation std, every channel (default 0.24)")
    group.add_argument("--data", help="the pretraining data (default: not recorded)")
    group.add_argument("--data-license", dest="pretrain_data_license", help="the licence terms of that data")
    group.add_argument("--license", help="licence id of the weights for the Hub (default: unknown)")
    group.add_argument("--recipe", help="how the weights were made (default: not recorded)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timm-uscl", description="Ultrasound-pretrained backbones for timm.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "list", help="the pretrained tags: published, installed here, or not available (and how to get them)"
    )
    p.add_argument("filter", nargs="?", default="*", help="fnmatch pattern on <arch>.<tag> (default: all)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("export", help="write a Hub-ready folder from a backbone state dict")
    p.add_argument("weights", help="backbone weights (.safetensors or .pth state dict, timm ResNet keys)")
    p.add_argument("--tag", required=True, help=f"<arch>.<your tag>, e.g. resnet18_uscl.my_run ({TAG_RULE})")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty --out (listed first)")
    _add_facts(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("convert", help="convert an original Meta-USCL/USCL checkpoint into an export folder")
    p.add_argument("checkpoint", help="e.g. resnet18_64.pth (Meta-USCL) or best_model.pth (USCL)")
    p.add_argument("--arch", default="resnet18", help="stock timm architecture of the checkpoint (default resnet18)")
    p.add_argument(
        "--tag",
        default=None,
        help="<arch>.<your tag>; default: the authors' built-in tag from the file name (resnet18_{64,224}.pth)",
    )
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--keep-head", action="store_true", help="save the projection head to projection_head.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace the files of a non-empty --out (listed first)")
    _add_facts(p)
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("install", help="install an export in the local weights store: load it by tag name, offline")
    p.add_argument("export_dir", help="an export folder (timm-uscl export / convert / pretrain)")
    p.add_argument("--tag", default=None, help="<arch>.<tag> (default: the tag the export records; any user tag)")
    p.add_argument("--overwrite", action="store_true", help="replace an installed copy of that tag")
    p.set_defaults(func=_cmd_install)

    p = sub.add_parser("push", help="upload an export folder to the Hub (token from the usual HF login/env)")
    p.add_argument("export_dir")
    p.add_argument("--repo-id", required=True, help="e.g. timm-uscl/resnet18_uscl.metauscl_covidblues_64")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--private", action="store_true", help="the default; kept for scripts that pass it")
    p.add_argument("--dry-run", action="store_true", help="show what would be uploaded, upload nothing")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser("pull", help="prefetch and verify weights into the Hub cache (air-gapped clusters)")
    p.add_argument("tags", nargs="+", help="<arch>.<tag> names, see `timm-uscl list`")
    p.add_argument("--cache-dir", default=None, help="Hub cache folder (default: HF_HUB_CACHE)")
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.set_defaults(func=_cmd_pull)

    for module in _TRAINING_COMMANDS:
        importlib.import_module(f"timm_uscl.training.cli.{module}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USCLError as err:
        print(f"timm-uscl {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as err:  # a trainer command without the `train` extra
        print(
            f"timm-uscl {args.command}: error: needs the {err.name!r} package; install the trainer's extra: "
            f"pip install 'timm-uscl[train]'",
            file=sys.stderr,
        )
        return 1
    except OSError as err:  # files and network (Hub HTTP errors are OSErrors too): one line, no traceback
        print(
            f"timm-uscl {args.command}: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"timm-uscl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
