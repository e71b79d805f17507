"""The ``rag`` command: parses arguments, calls the library, renders results.

Library errors (:class:`rag.errors.RagError`) become one-line messages and exit codes here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rag.errors import RagError

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        result: int = args.func(args)
        return result
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was changed.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rag", description="Grounded, cited answers from your own documents."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="settings file (TOML); default ./rag.toml")
    common.add_argument("--index", type=Path, help="index directory (default .rag-index)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    common.add_argument("--embedder", help="sentence-transformers model name or path")

    # One module per command group; each adds its subcommands here.
    from rag.cli import eval as cli_eval
    from rag.cli import index as cli_index
    from rag.cli import info as cli_info
    from rag.cli import ingest as cli_ingest
    from rag.cli import llm as cli_llm
    from rag.cli import query as cli_query
    from rag.cli import serve as cli_serve

    for group in (cli_ingest, cli_query, cli_eval, cli_info, cli_llm, cli_index, cli_serve):
        group.register(sub, common)
    return p


def _version() -> str:
    from rag import __version__

    return __version__


def _quiet_libraries(verbose: bool) -> None:
    # The CLI owns the process, so it may silence the chatty model libraries.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for name in ("pypdf", "faiss", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
