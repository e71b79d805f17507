"""``rag llm ...``: helpers for serving and checking LLM servers."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``llm`` command group to the ``rag`` parser."""
    llm = sub.add_parser("llm", help="serve or check an LLM server")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True, metavar="LLM_COMMAND")
    del llm_sub  # commands are added as they are implemented
