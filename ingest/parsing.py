"""One file's way to its chunks: triage in the ingesting process (read, hash, decide unchanged
files and moves), then loading and chunking by a parser, in worker processes
(:mod:`ingest.workers`) or a thread, with a file that outlives ``file_timeout`` skipped and why."""

from __future__ import annotations

import hashlib
import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.chunking import Chunk, Chunker, ChunkLimits, Counter
from ingest.loaders import LoadedFile, LoadError, load, load_text_document, timeout_reason
from ingest.plan import Limits, read_candidate, source_of
from ingest.report import TextDocument
from ingest.token_counters import portable_counter
from ingest.workers import Job, Lost, ParsePool, ThreadSource
from rag.index.docstore import DocumentRecord
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder

log = logging.getLogger(__name__)

# Parsed files held for the embedder beyond the one it waits for (the queue between the two).
WINDOW = 8


@dataclass(frozen=True)
class FileFacts:
    """What the index and the report keep of a parsed file besides its chunks."""

    kind: str
    title: str | None
    pages: int  # pages with text
    pages_without_text: int
    chars: int

    @classmethod
    def of(cls, loaded: LoadedFile) -> FileFacts:
        return cls(
            kind=loaded.kind,
            title=loaded.title,
            pages=len(loaded.pages),
            pages_without_text=loaded.pages_without_text,
            chars=loaded.chars,
        )


@dataclass
class Work:
    """What became of one candidate: its chunks, or why it needs none."""

    source: str
    sha256: str
    size: int
    facts: FileFacts | None
    chunks: list[Chunk]
    status: str
    reason: str | None = None
    old: DocumentRecord | None = None  # the vanished document a renamed file was
    pages_without_text: int = 0  # of a PDF skipped as a scan
    vectors: np.ndarray | None = None  # the chunks' vectors, where they were embedded elsewhere


def parse_source(
    candidates: Sequence[Path | TextDocument],
    triage: Callable[[Path | TextDocument], Work | Job],
    tokenizer: Tokenizer,
    embedder: Embedder,
    chunk_limits: ChunkLimits,
    limits: Limits,
    workers: int,
) -> ThreadSource | LostAsSkipped:
    """The parsed candidates, in order: from ``workers`` processes, or from a thread of this
    process when ``workers`` is 0 or a tokenizer cannot be sent to a process."""
    setup = ParserSetup.of(tokenizer, embedder, chunk_limits, limits)
    if workers and setup.portable:
        pool = ParsePool(
            candidates,
            triage,
            setup,
            processes=workers,
            timeout=limits.timeout + kill_grace(limits.timeout),
            window=WINDOW,
        )
        return LostAsSkipped(pool, limits)
    if workers:
        log.warning("The tokenizer cannot be sent to worker processes; parsing in a thread")
    return ThreadSource(candidates, triage, setup, window=WINDOW)


def kill_grace(timeout: float) -> float:
    """How long past ``file_timeout`` a worker may run before it is killed. A parser checks the
    limit itself between pages and stops with the page named; the kill is for a page that never
    ends, and must not catch a small file on a busy machine when the limit is tiny."""
    return max(1.0, 0.05 * timeout)


class LostAsSkipped:
    """A pool's results, where a file whose worker was killed or died is skipped with why."""

    def __init__(self, pool: ParsePool, limits: Limits) -> None:
        self.pool = pool
        self.limits = limits

    def __iter__(self) -> Iterator[Work]:
        for result in self.pool:
            if isinstance(result, Lost):
                yield Work(source_of(result.task), "", 0, None, [], "skipped", self._why(result))
            else:
                yield result

    def _why(self, lost: Lost) -> str:
        return lost_reason(lost, self.limits)

    def ready(self) -> bool:
        return self.pool.ready()

    def __enter__(self) -> LostAsSkipped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.close()


def lost_reason(lost: Lost, limits: Limits) -> str:
    """Why a file whose parser process was killed at its time limit, or died, is skipped."""
    if lost.timed_out:
        return f"{timeout_reason(limits.timeout)}; its parser process was killed"
    code = lost.exitcode
    if code is not None and code < 0:
        try:
            return f"the parser crashed ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"the parser crashed (exit code {code})"


def triage_file(
    candidate: Path | TextDocument,
    known: dict[str, DocumentRecord],
    renames: dict[str, list[DocumentRecord]],
    limits: Limits,
) -> Work | Job:
    """Read and hash one candidate (in this process, in the order of the candidates): what needs
    no parsing is decided here, the rest is a job for a parser."""
    source = source_of(candidate)
    data, reason = read_candidate(candidate, limits)
    if data is None:
        return Work(source, "", 0, None, [], "skipped", reason)
    sha = hashlib.sha256(data).hexdigest()
    rec = known.get(source)
    if rec is not None and rec.sha256 == sha:
        return Work(source, sha, len(data), None, [], "unchanged")
    if rec is None and renames.get(sha):
        return Work(source, sha, len(data), None, [], "renamed", old=renames[sha].pop(0))
    return Job(candidate)


@dataclass(frozen=True)
class ParserSetup:
    """What a parser needs, sent to each worker process: it builds the chunker there."""

    chunk_limits: ChunkLimits
    count_llm: Counter
    count_embed: Counter
    limits: Limits
    portable: bool = True  # the counters can be sent to another process

    @classmethod
    def of(
        cls, tokenizer: Tokenizer, embedder: Embedder, chunk_limits: ChunkLimits, limits: Limits
    ) -> ParserSetup:
        """Counters of their own, also for a thread: the embedder's Hugging Face tokenizer resets
        its padding at each call, so counting with it while it encodes a batch (padded) on the
        main thread could strip that batch's padding."""
        count_llm = portable_counter(tokenizer)
        count_embed = portable_counter(embedder.model.tokenizer)
        if count_llm is None or count_embed is None:
            return cls(
                chunk_limits, tokenizer.count_many, embedder.count_tokens, limits, portable=False
            )
        return cls(chunk_limits, count_llm, count_embed, limits)

    def __call__(self) -> Parser:
        return Parser(Chunker(self.chunk_limits, self.count_llm, self.count_embed), self.limits)


@dataclass
class Parser:
    chunker: Chunker
    limits: Limits

    def __call__(self, candidate: Path | TextDocument) -> Work:
        """Load and chunk one candidate. The file is read again here, in the worker, rather than
        sent; its hash is that of the bytes parsed."""
        limits = self.limits
        source = source_of(candidate)
        started = time.monotonic()
        data, reason = read_candidate(candidate, limits)
        if data is None:
            return Work(source, "", 0, None, [], "skipped", reason)
        sha = hashlib.sha256(data).hexdigest()
        try:
            if isinstance(candidate, TextDocument):
                loaded = load_text_document(candidate.source, candidate.text, candidate.title)
            else:
                loaded = load(candidate, data, time_limit=limits.timeout)
        except LoadError as exc:
            work = Work(source, sha, len(data), None, [], "skipped", str(exc))
            work.pages_without_text = exc.pages_without_text
            return work
        chunks: list[Chunk] = []
        for n, page in enumerate(loaded.pages):
            # Checked between pages, for a parse in a thread; a worker is killed at the limit.
            if n and time.monotonic() - started > limits.timeout:
                reason = f"{timeout_reason(limits.timeout)} while chunking page {page.number or 1}"
                return Work(source, sha, len(data), None, [], "skipped", reason)
            chunks.extend(self.chunker.split(page))
        if not chunks:
            return Work(source, sha, len(data), None, [], "skipped", "no text to index")
        return Work(source, sha, len(data), FileFacts.of(loaded), chunks, "added")
