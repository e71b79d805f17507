"""The warm index: one open :class:`~rag.engine.RAG` per committed snapshot, swapped after a write.

Requests lease the current snapshot and answer from it to the end, even when a write commits
meanwhile; the next request gets the new snapshot. A snapshot's files are closed when the last
request using it ends. The embedder and the LLM backend are loaded once and shared by every
snapshot, so a swap costs opening the index files, not the models. A change made by another
process (``rag ingest`` into the served index) is picked up the same way: each lease compares
the snapshot held with what CURRENT names.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.engine import RAG
from rag.index.manifest import check_compatible
from rag.index.reader import Store
from rag.index.snapshots import current_name
from rag.retrieval.embeddings import Embedder

log = logging.getLogger(__name__)


class _Snapshot:
    def __init__(self, rag: RAG) -> None:
        self.rag = rag
        self.users = 0
        self.retired = False

    @property
    def name(self) -> str:
        return self.rag.store.snapshot.name


class WarmIndex:
    """The served index: :meth:`lease` for reading, :meth:`writing` around a write."""

    def __init__(self, index_dir: Path, settings: Settings) -> None:
        self.index_dir = index_dir
        self.settings = settings
        self._lock = threading.Lock()  # guards _current and the users counts
        self._write = threading.Lock()  # one write of this server at a time; others queue
        rag = RAG.open(index_dir, settings)
        self.embedder: Embedder = rag.embedder
        self._current = _Snapshot(rag)
        self._tokenizer: Any = None

    def warm_up(self) -> None:
        """Load what the first question would: the query encoder and the retrieval code (one
        retrieval), and the model of an embedded backend (a served model is only connected to)."""
        rag = self._current.rag
        rag.retrieve("warm-up", 1)
        if rag.settings.resolved_answer_mode == "generate":
            _ = rag.backend

    @contextlib.contextmanager
    def lease(self) -> Iterator[RAG]:
        """The current snapshot's RAG, kept open until the block ends."""
        snap = self.acquire()
        try:
            yield snap.rag
        finally:
            self.release(snap)

    def acquire(self) -> _Snapshot:
        """Lease the current snapshot (moving to a newer one first if CURRENT changed); pair
        with :meth:`release`. Streaming responses hold it across their generator."""
        with self._lock:
            if current_name(self.index_dir) != self._current.name:
                self._swap_locked()
            snap = self._current
            snap.users += 1
            return snap

    def release(self, snap: _Snapshot) -> None:
        with self._lock:
            snap.users -= 1
            if snap.retired and snap.users == 0:
                snap.rag.close()

    def refresh(self) -> None:
        """Move to the snapshot CURRENT names now (after this server's own commit)."""
        with self._lock:
            if current_name(self.index_dir) != self._current.name:
                self._swap_locked()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this server's write turn; readers keep answering from their snapshot, and the
        next lease after the block sees the commit."""
        with self._write:
            try:
                yield
            finally:
                self.refresh()

    @property
    def tokenizer(self) -> Any:
        """The chunking tokenizer of ingest, loaded once on the first upload."""
        if self._tokenizer is None:
            from rag.llm.tokens import load_tokenizer

            self._tokenizer = load_tokenizer(self.settings)
        return self._tokenizer

    def close(self) -> None:
        with self._lock:
            self._current.retired = True
            if self._current.users == 0:
                self._current.rag.close()

    def _swap_locked(self) -> None:
        old = self._current
        try:
            store = Store.open(self.index_dir)
        except Exception:
            # A damaged CURRENT must not stop the answers: keep serving the snapshot held.
            log.exception("could not open the new snapshot of %s; still serving %s",
                          self.index_dir, old.name)  # fmt: skip
            return
        try:
            check_compatible(store.manifest, embedder=self.embedder.name, index_dir=self.index_dir)
        except Exception:
            store.close()
            log.exception("the new snapshot of %s was built with another embedder; still "
                          "serving %s", self.index_dir, old.name)  # fmt: skip
            return
        # The backend (an embedded model, or a server's client) outlives snapshots.
        self._current = _Snapshot(old.rag.over(store))
        log.info("now serving %s (was %s)", self._current.name, old.name)
        old.retired = True
        if old.users == 0:
            old.rag.close()
