"""Typed errors. Every message says what to do next; only the CLI turns them into exit codes."""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error this toolkit raises on purpose."""

    exit_code = 1


class ConfigError(RagError):
    """Settings are invalid or a settings file cannot be read."""

    exit_code = 2


class IndexNotFound(RagError):
    """The index directory does not exist or holds no committed index."""

    exit_code = 3


class IndexMismatch(RagError):
    """The index was built with other parameters than the current settings."""

    exit_code = 4


class IndexLocked(RagError):
    """Another process is writing to the index."""

    exit_code = 5


class IndexCorrupt(RagError):
    """The files of an index disagree with each other."""

    exit_code = 6


class ModelUnavailable(RagError):
    """A model (embedder, tokenizer or embedded LLM) cannot be loaded."""

    exit_code = 7


class LLMUnavailable(RagError):
    """The LLM server cannot be reached or answered with an error."""

    exit_code = 8


class PromptTooLong(RagError):
    """The question and history alone do not fit into the model's context window."""

    exit_code = 9


class NothingIngested(RagError):
    """No input file could be ingested."""

    exit_code = 10

    def __init__(self, message: str, skipped: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.skipped = skipped  # (path, reason) of each file skipped, for callers that rename them
