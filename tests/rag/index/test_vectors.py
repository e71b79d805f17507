"""Single-question vector search: exact results, computed on the calling thread only; an
approximate (IVF) segment returns as many results as an exact scan would, filter or not."""

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
from rag.index.manifest import Manifest, read_manifest
from rag.index.merging import merge
from rag.index.reader import Store
from rag.index.snapshots import current_snapshot
from rag.index.vectors import IVF_FILE, SegmentVectors, write_ivf
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


# -- approximate segments: never fewer results than the rows allowed --


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _two_topics(rng: np.random.Generator, n: int, near: int) -> np.ndarray:
    """Unit vectors of two opposite topics (cosine -0.99 between their means), each made of 40
    neighbourhoods as embeddings of related texts are: rows ``[:near]`` about one, the rest
    about the other."""
    pole = _unit(rng, 1)[0]
    out = []
    for sign, count in ((1.0, near), (-1.0, n - near)):
        centres = sign * pole + 0.45 * _unit(rng, 40)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        out.append(centres[rng.integers(0, 40, count)] + 0.3 * _unit(rng, count))
    v = np.concatenate(out)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


N, NEAR = 8000, 5600  # 30% of the rows about the far topic


@pytest.fixture(scope="module")
def topics() -> np.ndarray:
    return _two_topics(np.random.default_rng(11), N, NEAR)


@pytest.fixture(scope="module")
def ivf_dir(tmp_path_factory: pytest.TempPathFactory, topics: np.ndarray) -> Path:
    directory = tmp_path_factory.mktemp("ivf")
    built = write_ivf(directory / IVF_FILE, topics)
    assert built is not None and built.nprobe == 64  # clustered: the first nprobe is enough
    return directory


def test_a_filter_on_far_rows_returns_k_results_from_an_ivf_segment(
    ivf_dir: Path, topics: np.ndarray
) -> None:
    """Issue 20, item 1: the filter allows 15% of the rows (over the 10% under which more lists
    were probed), all in the far topic; the 64 lists nearest a question of the near topic hold
    none of them. IVF returned 0 of 10; an exact scan of the allowed rows returns 10."""
    vectors = SegmentVectors(ivf_dir, DIM, nprobe=64)
    assert vectors.approximate
    allowed = np.zeros(N, dtype=bool)
    allowed[NEAR : NEAR + 1200] = True
    for q in topics[:100:2]:
        for k in (50, 10):
            hits = vectors.search(q, k, allowed, int(allowed.sum()))
            assert len(hits) == k
            assert all(allowed[p] for p, _ in hits)
        # The allowed rows lie away from the question: every list is probed, which is exact.
        best = np.flatnonzero(allowed)[np.argsort(-(topics[allowed] @ q), kind="stable")[:10]]
        assert [p for p, _ in hits] == best.tolist()


def test_an_ivf_segment_returns_k_results_when_the_probed_lists_hold_fewer(
    ivf_dir: Path, topics: np.ndarray
) -> None:
    """Without a filter too: one probed list of about 22 rows cannot give 100 results."""
    vectors = SegmentVectors(ivf_dir, DIM, nprobe=1)
    assert len(vectors.search(topics[0], 100, None, N)) == 100
    live = np.ones(N, dtype=bool)
    live[::3] = False  # tombstones: every row a filter of its own
    hits = vectors.search(topics[0], 100, live, int(live.sum()))
    assert len(hits) == 100 and all(live[p] for p, _ in hits)
    assert len(vectors.search(topics[0], N, None, N)) == N


def test_the_store_returns_min_k_allowed_on_an_ivf_segment(
    tmp_path: Path, topics: np.ndarray
) -> None:
    """Through the Store, as retrieval calls it: a source filter on documents about the far
    topic, over one merged IVF segment and a small exact segment added after it."""
    index = tmp_path / "idx"
    manifest = Manifest(
        embedder="e", dimension=DIM, tokenizer="t", chunk_tokens=64, chunk_overlap=8
    )
    per_doc = 20
    with open_writer(index, manifest) as w:
        for d in range(N // per_doc):
            far = d * per_doc >= NEAR
            name = f"/d/{'near' if not far else 'far' if d % 2 else 'other'}-{d}.pdf"
            w.add_document(
                source=name,
                sha256=hashlib.sha256(name.encode()).hexdigest(),
                kind="pdf",
                size=1,
                pages=per_doc,
                title=None,
                chunks=[
                    NewChunk(f"common words {d} {i}", i + 1, None, None, 0, 5, 3)
                    for i in range(per_doc)
                ],
                vectors=topics[d * per_doc : (d + 1) * per_doc],
            )
        w.commit()
    snap = current_snapshot(index)
    merge(index, snap, [s.name for s in read_manifest(snap).segments], ann=True)
    with open_writer(index, manifest) as w:  # a second, exact segment: 5 allowed rows more
        w.add_document(
            source="/d/far-late.pdf",
            sha256="1" * 64,
            kind="pdf",
            size=1,
            pages=5,
            title=None,
            chunks=[NewChunk(f"common late {i}", i + 1, None, None, 0, 5, 3) for i in range(5)],
            vectors=topics[-5:],
        )
        w.commit()
    with Store.open(index) as store:
        assert [s.vectors.approximate for s in store.segments] == [True, False]
        f = Filters(source_glob="far-*")
        allowed = set(store.filter_ids(source_glob="far-*"))
        assert len(allowed) == 1205  # 15% of the IVF segment, and the late document
        for q in topics[:20:4]:
            for k in (10, 100):
                hits = store.search_filtered(q, k, f)
                assert len(hits) == k and {i for i, _ in hits} <= allowed
        # A filter allowing fewer rows than k gives every one of them.
        few = Filters(source_glob="far-late.pdf")
        assert len(store.search_filtered(topics[0], 10, few)) == 5
        # Lexical search filters inside the query, so it is never short of matching chunks.
        assert len(store.lexical_search("common", 100, f)) == 100
