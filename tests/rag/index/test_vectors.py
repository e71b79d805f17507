"""Single-question vector search: exact results, computed on the calling thread only."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag.index.docstore import NewChunk
from rag.index.filters import Filters
from rag.index.manifest import Manifest
from rag.index.reader import Store
from rag.index.writer import open_writer

DIM = 32


def _store(index: Path, n_docs: int = 20, per_doc: int = 10) -> np.ndarray:
    """A store of ``n_docs`` documents (half PDFs) with random unit vectors; returns the vectors
    in chunk id order (ids start at 1)."""
    manifest = Manifest(
        embedder="test-embedder", dimension=DIM, tokenizer="t", chunk_tokens=64, chunk_overlap=8
    )
    rng = np.random.default_rng(7)
    all_vectors = []
    with open_writer(index, manifest) as w:
        for d in range(n_docs):
            v = rng.normal(size=(per_doc, DIM)).astype(np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            kind = "pdf" if d % 2 else "text"
            w.add_document(
                source=f"/docs/d{d}.{'pdf' if d % 2 else 'txt'}",
                sha256=hashlib.sha256(str(d).encode()).hexdigest(),
                kind=kind,
                size=1,
                pages=per_doc,
                title=None,
                chunks=[
                    NewChunk(f"doc {d} chunk {i}", i + 1, None, None, 0, 5, 3)
                    for i in range(per_doc)
                ],
                vectors=v,
            )
            all_vectors.append(v)
        w.commit()
    return np.concatenate(all_vectors)


def test_search_is_exact_with_and_without_filters(tmp_path: Path) -> None:
    vectors = _store(tmp_path / "idx")
    query = np.random.default_rng(3).normal(size=DIM).astype(np.float32)
    exact = vectors.astype(np.float64) @ query.astype(np.float64)
    with Store.open(tmp_path / "idx") as store:
        hits = store.search(query, 10)
        pdf_hits = store.search_filtered(query, 10, Filters(kinds=("pdf",)))
        pdf_ids = store.filter_ids(kinds=["pdf"])
    assert [i for i, _ in hits] == [int(i) + 1 for i in np.argsort(-exact)[:10]]
    assert [s for _, s in hits] == pytest.approx([exact[i - 1] for i, _ in hits], abs=1e-5)
    in_pdfs = sorted(pdf_ids, key=lambda i: -exact[i - 1])[:10]
    assert [i for i, _ in pdf_hits] == in_pdfs


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_one_question_is_searched_on_the_calling_thread(tmp_path: Path) -> None:
    """FAISS would start an OpenMP team (one thread per core) for a single query; on shared cores
    that team cost 3x the scan itself (see rag.index.vectors.search_one). Run in a fresh process
    with OMP_NUM_THREADS=4, so that the team would exist on any machine: searching, filtered or
    not, must start no thread, and must leave the caller's OpenMP setting as it was."""
    _store(tmp_path / "idx")
    code = """if True:
        import os, sys
        import numpy as np
        from rag.index.filters import Filters
        from rag.index.reader import Store
        from rag.index.vectors import faiss_module

        def threads():
            return len(os.listdir("/proc/self/task"))

        store = Store.open(sys.argv[1])
        query = np.ones(store.manifest.dimension, dtype=np.float32)
        before = threads()
        store.search(query, 5)
        store.search_filtered(query, 5, Filters(kinds=("pdf",)))
        print(before, threads(), faiss_module().omp_get_max_threads())
    """
    env = {**os.environ, "OMP_NUM_THREADS": "4"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "idx")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    before, after, omp_threads = map(int, out.stdout.split())
    assert after == before, out.stdout
    assert omp_threads == 4
