"""The ``rag`` command: one module per command group; the only code that prints or picks exit codes."""

from rag.cli.app import main

__all__ = ["main"]
