"""README.md's code blocks, as written (issue 18): a README whose commands no longer parse, or whose snippets name
a flag, file or function that is gone, misleads the first person who copies it.

* ``python`` blocks run where that is possible offline: the weights they load come from the loopback Hub stub
  (tests/hubstub.py) or the local weights store, with seeded random weights exported under the README's tag.
  Later blocks continue earlier ones (``timm`` and ``timm_uscl`` are imported), as a reader runs them. A block
  that needs its own files or a real run (the Python API tour: ``pretrain``, ``push``, placeholders such as
  ``model_or_state_dict``) is checked without running it: every import resolves and every call of a named
  function binds to its signature.
* ``bash`` blocks: every ``timm-uscl`` command line parses with the real parser (``pretrain`` ones also build
  their validated config, so ``--set`` keys are checked), and every script, benchmark or data folder a line names
  exists (``../shared/data`` is the test data root). Placeholders (MODEL, EXPORT, ``runs/...`` outputs) are not
  files yet and are not checked.
* A block without a language (a folder layout) is text.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
TAG = "resnet18_uscl.metauscl_covidblues_64"  # the tag the README's snippets load
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_RUNNERS = ("bash", "python", ".venv/bin/python")  # `RUNNER FILE`: FILE must exist
_INPUT_ROOTS = ("scripts/", "benchmarks/", "configs/", "training/", "tests/", "../shared/data")  # checked paths

# python blocks that are not run, and why (matched by their first line)
NOT_RUN = {
    "import timm_uscl": "the Python API tour: placeholders (model_or_state_dict, results), a push, a pretraining",
}


CLAIMS = {  # what a block's comments say of a name it defines, checked after it ran
    "cfg": lambda cfg: cfg["mean"] == (0.18,) * 3 and cfg["std"] == (0.24,) * 3 and cfg["input_size"][-1] == 64,
    "model": lambda model: model.num_classes == 0,  # headless
}


def _blocks() -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced block."""
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1), m.group(2)) for m in _FENCE.finditer(text)]


def _of(language: str) -> list[Any]:
    return [pytest.param(text, id=f"line{line}") for line, lang, text in _blocks() if lang == language]


def test_every_block_is_python_bash_or_plain_text() -> None:
    assert {lang for _, lang, _ in _blocks()} <= {"python", "bash", ""}
    assert len(_of("python")) >= 4 and len(_of("bash")) >= 6  # the fences were found


# ---------------------------------------------------------------- bash


def _commands(text: str) -> Iterator[list[str]]:
    """Each simple command of a bash block (continuation lines joined, comments dropped, split at ``&&``/``;``
    and the ``for ... do ... done`` keywords), without leading ``NAME=value`` assignments."""
    for line in text.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in (";", "&&", "||", "|") or (not command and token in ("do", "done", "then", "fi")):
                while command and re.fullmatch(r"[A-Z_]+=\S*", command[0]):
                    command.pop(0)
                if command and command[0] != "for":
                    yield command
                command = []
            else:
                command.append(token)


def _check_paths(command: list[str], data_root: Path) -> None:
    for k, token in enumerate(command):
        path = token
        if token.startswith("../shared/data"):
            path = str(data_root) + token.removeprefix("../shared/data")
        elif not (token.startswith(_INPUT_ROOTS) or (k == 1 and command[0].endswith(_RUNNERS))):
            continue
        assert Path(REPO_ROOT, path).exists(), f"{' '.join(command)}: {token} does not exist"


def _check_cli(argv: list[str]) -> None:
    from timm_uscl.cli import build_parser

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as err:  # argparse's way of refusing: the message went to stderr
        raise AssertionError(f"`timm-uscl {shlex.join(argv)}` does not parse") from err
    if args.command == "pretrain":
        from timm_uscl.training.cli.pretrain import config_from_args

        config_from_args(args)  # preset, flags and --set keys resolve to a valid config


@pytest.mark.parametrize("text", _of("bash"))
def test_bash_block_commands_parse_and_name_existing_files(text: str, data_root: Path) -> None:
    commands = list(_commands(text))
    assert commands
    for command in commands:
        program = command[0]
        assert program.endswith(("timm-uscl", *_RUNNERS)), f"unexpected program {program}"
        _check_paths(command, data_root)
        if program.endswith("timm-uscl"):
            _check_cli(command[1:])


# ---------------------------------------------------------------- python


@pytest.fixture
def readme_weights(hub: Any, store: Path, source: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's tag published on the Hub stub (seeded random weights, its sha256 in the weights table) and
    ``resnet18_uscl.smoke`` installed in a fresh local store, as the README's smoke run would leave it."""
    import timm_uscl
    from timm_uscl import WEIGHTS
    from timm_uscl.checksum import sha256_file
    from timm_uscl.cli import main as cli
    from timm_uscl.uscl import refresh_registry
    from timm_uscl.weights import with_publication

    export_dir = timm_uscl.export(source, tmp_path / "export", TAG)
    assert cli(["push", str(export_dir), "--repo-id", WEIGHTS[TAG].repo_id]) == 0
    sha = sha256_file(export_dir / "model.safetensors")
    monkeypatch.setitem(
        WEIGHTS, TAG, with_publication(WEIGHTS[TAG], revision=hub.commits(WEIGHTS[TAG].repo_id)[-1], sha256=sha)
    )
    timm_uscl.install(timm_uscl.export(source, tmp_path / "smoke", "resnet18_uscl.smoke"))
    refresh_registry()


def _calls_bind(tree: ast.AST, namespace: dict[str, Any]) -> None:
    """Every call of a function the block imported binds to that function's signature (placeholder values)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        try:
            func = eval(compile(ast.Expression(node.func), "<readme>", "eval"), namespace)
        except (NameError, AttributeError) as err:
            if isinstance(err, AttributeError):
                raise AssertionError(f"README: {ast.unparse(node.func)} does not exist") from err
            continue  # a call on a placeholder (result.export_dir, model_or_state_dict)
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            continue
        signature.bind(*node.args, **{k.arg: k.value for k in node.keywords if k.arg})


@pytest.mark.parametrize("text", _of("python"))
def test_python_block_runs_or_its_names_and_calls_resolve(text: str, readme_weights: None) -> None:
    import timm

    import timm_uscl

    namespace: dict[str, Any] = {"timm": timm, "timm_uscl": timm_uscl}
    reason = next((why for first, why in NOT_RUN.items() if text.splitlines()[0] == first), None)
    tree = ast.parse(text)
    if reason is None:
        exec(compile(tree, "README.md", "exec"), namespace)
        for name, claim in CLAIMS.items():
            if name in namespace:
                assert claim(namespace[name]), f"README: {name} is not what its comment says"
        return
    imports: list[ast.stmt] = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(imports, []), "README.md", "exec"), namespace)
    _calls_bind(tree, namespace)
