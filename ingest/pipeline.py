"""discover -> hash -> load -> chunk -> embed (batched) -> commit, incrementally and atomically.

Files are hashed in this process, in order, and those that need parsing are loaded and chunked in
worker processes (:mod:`ingest.workers`) while the main thread embeds, so parsing PDFs uses every
core and overlaps with the embedder's forward passes; a file whose parse outlives ``file_timeout``
has its worker killed and is skipped with the reason. Results come back in the order of the files,
so the index and the report are those of a one-worker run. Identical chunk texts are embedded once
while they are among the recent ones (a bounded cache: memory does not grow with the corpus).
Everything is published in one atomic commit at the end; an interrupted run leaves the previous
index as it was.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ingest.chunking import Chunk, ChunkLimits
from ingest.loaders import discover
from ingest.parsing import LostAsSkipped, ParserSetup, Work, parse_source, triage_file
from ingest.plan import Limits, by_sha, find_vanished, plan_sync, source_of
from ingest.ray_source import RaySource, import_ray
from ingest.report import (
    FileProgress,
    IngestReport,
    ProgressCallback,
    SkippedFile,
    TextDocument,
    nothing_message,
)
from ingest.vector_cache import VectorCache, embed_missing, text_key
from ingest.workers import Job, ThreadSource, warm_up
from rag.config import Settings
from rag.errors import NothingIngested
from rag.index.crashpoints import reach
from rag.index.docstore import DocumentRecord, NewChunk
from rag.index.manifest import Manifest, committed_embedder
from rag.index.writer import StoreWriter, open_writer
from rag.llm.tokens import Tokenizer, load_tokenizer
from rag.retrieval.embeddings import Embedder

log = logging.getLogger(__name__)


# Chunks collected from several files before one embedding call.
_FLUSH_CHUNKS = 256


_MIN_FLUSH = 32

# Vectors kept for embedding identical chunk texts once: the most recent texts, this many bytes.
_DEDUP_BYTES = 64 * 1024 * 1024


def ingest(
    paths: Iterable[str | Path],
    index_dir: str | Path,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    tokenizer: Tokenizer | None = None,
    progress: ProgressCallback | None = None,
    sync: bool = False,
    dry_run: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
) -> IngestReport:
    """Ingest files and folders into ``index_dir``, creating it if needed.

    Files already in the index with the same content are left alone; changed files have their
    chunks replaced. Unreadable files are reported in ``files_skipped`` and the rest goes on.
    Raises :class:`~rag.errors.NothingIngested` when files were given but none could be read.

    With ``sync``, documents whose source is one of ``paths`` or lies under one of them but no
    longer exists are deleted, and a new file with the content of such a document is taken to be
    that document moved: its source is updated and nothing is re-embedded. With ``dry_run``
    nothing is changed and no model is loaded; the report's ``plan`` lists what would change.

    ``workers`` processes parse and chunk files (default: ``settings.ingest_workers``, or the
    number of cores); 0 parses in a thread of this process, where a hanging parse is not stopped.

    With ``ray_address``, files are parsed, chunked and embedded on a Ray cluster
    (:mod:`ingest.ray_source`) and written here as a local ingest writes them: "" joins the
    cluster ``RAY_ADDRESS`` or a ``ray start`` on this machine names, or starts a local one; else
    the address of a cluster. ``workers`` then bounds the parse tasks that run at once (default:
    the cluster's CPUs). Needs the ``ray`` extra.
    """
    paths = list(paths)
    candidates: list[Path | TextDocument] = []
    skipped: list[SkippedFile] = []
    for path, reason in discover(paths):
        if reason is None:
            candidates.append(path)
        else:
            skipped.append(SkippedFile(path=str(path), reason=reason))
    scope = [Path(p).expanduser().resolve() for p in paths] if sync else None
    reach("ingest-discovered")
    if dry_run:
        return plan_sync(candidates, skipped, Path(index_dir), settings or Settings.load(), scope)
    return _ingest(
        candidates,
        skipped,
        index_dir,
        settings,
        embedder,
        tokenizer,
        progress,
        scope,
        workers,
        ray_address,
    )


def ingest_documents(
    documents: Iterable[TextDocument],
    index_dir: str | Path,
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    tokenizer: Tokenizer | None = None,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Ingest texts that are not files (records of a dataset, rows of a database).

    Each document's ``source`` identifies it in the index and in citations, as a path does for
    files; the same rules for unchanged and changed content apply. ``workers`` as for
    :func:`ingest`.
    """
    return _ingest(
        list(documents), [], index_dir, settings, embedder, tokenizer, progress, None, workers
    )


def _ingest(
    candidates: list[Path | TextDocument],
    skipped: list[SkippedFile],
    index_dir: str | Path,
    settings: Settings | None,
    embedder: Embedder | None,
    tokenizer: Tokenizer | None,
    progress: ProgressCallback | None,
    scope: list[Path] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> IngestReport:
    settings = settings or Settings.load()
    started = time.perf_counter()
    index_dir = Path(index_dir)
    if ray_address is not None:
        import_ray()  # the install hint before any model loads
        if not candidates:
            ray_address = None  # nothing to parse: no cluster needed (a sync may still delete)
    if workers is None:
        workers = settings.ingest_workers
    if workers is None and ray_address is None:
        workers = os.cpu_count() or 1
    if workers is not None:
        workers = min(workers, len(candidates))
    if workers and ray_address is None:
        warm_up()  # the fork server imports the parsers while the models load here
    # The tokenizer first: a served model without one is a settings error, found before the
    # embedder takes seconds to load. It is the one every backend's text_tokens() gives for these
    # settings, loaded without the model's weights.
    tokenizer = tokenizer or load_tokenizer(settings)
    # embed_quantize "auto" follows the index's own embedder when there is one.
    embedder = embedder or Embedder.from_settings(settings, committed_embedder(index_dir))
    report = IngestReport(index=str(index_dir), files_skipped=skipped)

    manifest = Manifest(
        embedder=embedder.name,
        dimension=embedder.dimension,
        tokenizer=tokenizer.name,  # the tokenizer that counted, also when one is passed in
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
    )
    chunk_limits = ChunkLimits(
        chunk_tokens=settings.chunk_tokens,
        overlap_tokens=settings.chunk_overlap,
        embed_tokens=embedder.max_tokens,
    )
    limits = Limits.of(settings)
    total = len(candidates)
    with open_writer(index_dir, manifest) as writer:
        known: dict[str, DocumentRecord] = {}
        for candidate in candidates:
            rec = writer.find_source(source_of(candidate))
            if rec is not None:
                known[rec.source] = rec
        vanished = find_vanished(writer.documents(), scope) if scope is not None else []
        renames = by_sha(vanished)
        renamed_ids: set[int] = set()
        cache = VectorCache(_DEDUP_BYTES // (4 * embedder.dimension + 200))
        pending: list[Work] = []
        done = 0

        def notify(item: Work, chunks: int) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                pages = item.facts.pages if item.facts else 0
                progress(FileProgress(done, total, item.source, item.status, pages, chunks))

        def flush() -> None:
            # One embedding call for many files: full batches, sorted by length across files.
            if not pending:
                return
            vectors = embed_missing(
                embedder,
                [c.text for w in pending for c in w.chunks],
                cache,
                settings.embed_batch_size,
            )
            reach("ingest-file-embedded")
            for w in pending:
                _commit_file(w, writer, known, vectors, report)
                reach("ingest-file-stored")
                notify(w, len(w.chunks))
            pending.clear()

        def triage(candidate: Path | TextDocument) -> Work | Job:
            return triage_file(candidate, known, renames, limits)

        source: RaySource | ThreadSource | LostAsSkipped
        if ray_address is not None:
            source = RaySource(
                candidates,
                known,
                renames,
                settings,
                ParserSetup.of(tokenizer, embedder, chunk_limits, limits),
                limits,
                embedder.name,
                address=ray_address,
                workers=workers,
            )
        else:
            source = parse_source(
                candidates, triage, tokenizer, embedder, chunk_limits, limits, workers or 0
            )
        with source as parsed:
            for item in parsed:
                reach("ingest-file-loaded")
                if item.status == "skipped":
                    report.files_skipped.append(
                        SkippedFile(path=item.source, reason=item.reason or "")
                    )
                    report.pages_without_text += item.pages_without_text
                    notify(item, 0)
                elif item.status == "unchanged":
                    report.unchanged += 1
                    notify(item, 0)
                elif item.status == "renamed":
                    assert item.old is not None
                    writer.rename_document(item.old.id, item.source)
                    renamed_ids.add(item.old.id)
                    report.renamed += 1
                    notify(item, 0)
                elif item.vectors is not None:  # embedded on the cluster
                    if pending:
                        flush()
                    _commit_file(item, writer, known, {}, report)
                    reach("ingest-file-stored")
                    notify(item, len(item.chunks))
                else:
                    pending.append(item)
                    waiting = sum(len(w.chunks) for w in pending)
                    # Embed once enough is collected, or early when the parsers are still busy
                    # with the next file, so that the embedder does not sit idle.
                    if waiting >= _FLUSH_CHUNKS or (not parsed.ready() and waiting >= _MIN_FLUSH):
                        flush()
            flush()
        for doc in vanished:
            if doc.id not in renamed_ids:
                report.chunks_removed += writer.delete_document(doc.id)
                report.deleted += 1
        if not (report.files_ingested or report.unchanged or report.renamed or report.deleted):
            raise NothingIngested(
                nothing_message(report), tuple((f.path, f.reason) for f in report.files_skipped)
            )
        report.documents_total, report.chunks_total = writer.counts()
        if report.files_ingested or report.chunks_removed or report.renamed or report.deleted:
            reach("ingest-before-commit")
            writer.commit()
            report.warnings += writer.warnings
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _commit_file(
    w: Work,
    writer: StoreWriter,
    known: dict[str, DocumentRecord],
    vectors_of: dict[bytes, np.ndarray],
    report: IngestReport,
) -> None:
    facts = w.facts
    assert facts is not None
    if w.vectors is not None:
        vectors = w.vectors
    else:
        vectors = np.stack([vectors_of[text_key(c.text)] for c in w.chunks])
    old = known.get(w.source)
    if old is not None:
        report.chunks_removed += writer.delete_document(old.id)
        report.updated += 1
    else:
        report.added += 1
    writer.add_document(
        source=w.source,
        sha256=w.sha256,
        kind=facts.kind,
        size=w.size,
        pages=facts.pages + facts.pages_without_text,
        title=facts.title,
        chunks=[_new_chunk(c) for c in w.chunks],
        vectors=vectors,
    )
    report.files_ingested += 1
    report.pages += facts.pages
    report.pages_without_text += facts.pages_without_text
    report.chars += facts.chars
    report.chunks_added += len(w.chunks)


def _new_chunk(c: Chunk) -> NewChunk:
    return NewChunk(
        text=c.text,
        page=c.page,
        page_label=c.page_label,
        section=c.section,
        start=c.start,
        end=c.end,
        tokens=c.tokens,
    )
