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


@dataclass
class Work:
    """What became of one candidate: its chunks, or why it needs none."""

    source: str
    sha256: str
    size: int
    loaded: LoadedFile | None
    chunks: list[Chunk]
    status: str
    reason: str | None = None
    old: DocumentRecord | None = None  # the vanished document a renamed file was
    pages_without_text: int = 0  # of a PDF skipped as a scan


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
    # Counters of their own, also for a thread: the embedder's Hugging Face tokenizer resets its
    # padding at each call, so counting with it while it encodes a batch (padded) on the main
    # thread could strip that batch's padding.
    count_llm = portable_counter(tokenizer)
    count_embed = portable_counter(embedder.model.tokenizer)
    portable = count_llm is not None and count_embed is not None
    if count_llm is None or count_embed is None:
        count_llm, count_embed = tokenizer.count_many, embedder.count_tokens
    setup = ParserSetup(chunk_limits, count_llm, count_embed, limits)
    if workers and portable:
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
        if lost.timed_out:
            return f"{timeout_reason(self.limits.timeout)}; its parser process was killed"
        code = lost.exitcode
        if code is not None and code < 0:
            try:
                return f"the parser crashed ({signal.Signals(-code).name})"
            except ValueError:
                pass
        return f"the parser crashed (exit code {code})"

    def ready(self) -> bool:
        return self.pool.ready()

    def __enter__(self) -> LostAsSkipped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.close()


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
        return Work(source, sha, len(data), loaded, chunks, "added")
