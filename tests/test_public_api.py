"""The public API a user imports, the cost of importing it, the `rag` command's surface and the
packaging of every sub-package: what the move into sub-packages (issue 9) must not change."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import ingest
import rag
from rag.cli.app import _parser

ROOT = Path(__file__).resolve().parent.parent

# The documented kind of every public name (README "Python API"); a name added to __all__ must
# be added here, with its kind.
RAG_PUBLIC = {
    "RAG": "class",
    "Answer": "class",
    "AnswerStream": "class",
    "Chat": "class",
    "Citation": "class",
    "Filters": "class",
    "Settings": "class",
    "Usage": "class",
    "ConfigError": "exception",
    "IndexCorrupt": "exception",
    "IndexLocked": "exception",
    "IndexMismatch": "exception",
    "IndexNotFound": "exception",
    "LLMUnavailable": "exception",
    "ModelUnavailable": "exception",
    "NothingIngested": "exception",
    "PromptTooLong": "exception",
    "RagError": "exception",
    "__version__": "str",
}
INGEST_PUBLIC = {
    "FileProgress": "class",
    "IngestReport": "class",
    "SkippedFile": "class",
    "TextDocument": "class",
    "ingest": "function",
    "ingest_documents": "function",
}
# Libraries that cost seconds to import (or pull in torch): none may load on `import rag`.
# "langchain" stands for every langchain_* distribution too.
HEAVY = ("torch", "numpy", "faiss", "transformers", "sentence_transformers", "langchain")
# The `rag` command's groups and their subcommands, as before the move into sub-packages.
COMMANDS = {
    "ingest": set(),
    "ask": set(),
    "chat": set(),
    "info": set(),
    "eval": set(),
    "llm": {"export-default", "serve", "check"},
    "index": {"verify", "recover", "delete", "optimize"},
    "serve": set(),
}


def _kind(value: object) -> str:
    if inspect.isclass(value):
        return "exception" if issubclass(value, BaseException) else "class"
    if inspect.isfunction(value):
        return "function"
    return type(value).__name__


@pytest.mark.parametrize(
    ("module", "documented"), [(rag, RAG_PUBLIC), (ingest, INGEST_PUBLIC)], ids=["rag", "ingest"]
)
def test_every_public_name_imports_and_is_its_documented_kind(
    module: object, documented: dict[str, str]
) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert sorted(names) == sorted(documented)
    assert len(set(names)) == len(names)
    kinds = {name: _kind(getattr(module, name)) for name in names}
    assert kinds == documented
    for name in names:
        if documented[name] == "exception" and module is rag:
            # The CLI turns every library error into a message and exit code through RagError.
            assert issubclass(getattr(rag, name), rag.RagError)


def test_from_imports_of_the_readme_work() -> None:
    namespace: dict[str, object] = {}
    exec(
        "from rag import RAG, Settings, Filters, Answer, Citation, RagError\n"
        "from ingest import ingest\n",
        namespace,
    )
    assert namespace["RAG"].__module__ == "rag.engine"  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from rag import NoSuchName", {})


def _heavy_loaded_by(code: str) -> set[str]:
    """The HEAVY libraries in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=True,
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    return {name for name in loaded if name.startswith(HEAVY)}


@pytest.mark.parametrize(
    "code",
    [
        "import rag",
        "from rag import Settings, Filters",
        "import rag\nrag.Settings()\nrag.Filters()",
        "import rag.cli",
    ],
    ids=["import-rag", "from-rag-import", "settings-and-filters", "import-rag-cli"],
)
def test_importing_rag_loads_no_heavy_library(code: str) -> None:
    assert _heavy_loaded_by(code) == set()


def test_importing_ingest_loads_no_torch_or_faiss() -> None:
    # numpy is loaded today (through rag.index), so only the expensive ones are checked here.
    assert _heavy_loaded_by("import ingest") <= {"numpy"}


def test_the_heavy_import_probe_sees_an_eager_import() -> None:
    """The probe above is not blind: it does see a heavy library when one is imported."""
    assert _heavy_loaded_by("import rag\nimport numpy\nimport langchain_core") == {
        "numpy",
        "langchain_core",
    }


def _tree(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_the_cli_keeps_its_commands() -> None:
    groups = _tree(_parser())
    assert set(groups) == set(COMMANDS)
    for name, subcommands in COMMANDS.items():
        assert set(_tree(groups[name])) == subcommands, name


@pytest.mark.parametrize(
    "argv",
    [[name] for name in COMMANDS]
    + [[name, sub] for name, subs in COMMANDS.items() for sub in sorted(subs)],
    ids=lambda argv: " ".join(argv),
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rag {' '.join(argv)}")


@pytest.mark.parametrize("how", ["console-script", "python-m"])
def test_rag_help_lists_the_commands(how: str) -> None:
    if how == "console-script":
        script = shutil.which("rag", path=str(Path(sys.executable).parent))
        assert script is not None, "the `rag` console script is not installed (pip install -e .)"
        argv = [script, "--help"]
    else:
        argv = [sys.executable, "-m", "rag.cli", "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ")}
    assert listed == set(COMMANDS)


def test_every_package_is_packaged() -> None:
    """A sub-package missing from [tool.setuptools] packages is absent from a built wheel."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        packaged = set(tomllib.load(fh)["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("rag", "ingest")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk <= packaged


def test_architecture_doc_shows_the_checked_layers() -> None:
    """docs/architecture.md draws the layers exactly as the import-linter contract states them."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        contracts = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    [layers] = [c["layers"] for c in contracts if c["type"] == "layers"]
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "\n".join(["```", *layers, "```"]) in doc


def test_architecture_doc_names_only_files_that_exist() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:rag|ingest|tests)/[\w/]*(?:\.py)?)`", doc))
    assert len(paths) > 10  # the "where does this change go" list names files to copy
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []
