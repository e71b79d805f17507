"""How many embedding nodes one ingest driver can keep up with: its write rate over an embedder's.

On a Ray cluster (`rag ingest --ray`) parsing and embedding spread over the nodes, but every
chunk comes back to the driver, which writes it into the new segment (SQLite rows, tantivy
postings, the vectors) and commits once: the serial part of a cluster ingest. This script times
that write alone, through the real writer (`open_writer`, `StoreWriter.add_document`, `commit`),
beside the default embedder (on a CPU: the int8 ONNX model) on the same chunk texts, in one run,
rounds alternating. The ratio write chunks/s / embed chunks/s is how many embedding nodes like
this machine one driver can absorb before it becomes the bottleneck (an upper bound: the
driver also receives and unpickles each file's rows from Ray, which is not timed here).

Chunks are SciFact abstracts (title and text) cut at whitespace into pieces of at most
``--chunk-chars`` characters (800: about the 200 tokens of the default chunk), one document per
abstract, with seeded random unit vectors (the write does not depend on their values).

    python benchmarks/driver_write.py                          # all 5,183 abstracts, 3 rounds
    python benchmarks/driver_write.py --docs 1000 --embed-sample 500 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact" / "derived_beir_style"


def pieces(text: str, limit: int) -> list[str]:
    """``text`` cut at whitespace into pieces of at most ``limit`` characters."""
    out: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > limit:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


def load_documents(root: Path, docs: int | None, limit: int) -> list[list[str]]:
    from rag.eval.beir import iter_corpus

    path = next(p for p in (root / "corpus.jsonl.gz", root / "corpus.jsonl") if p.exists())
    documents = []
    for row in iter_corpus(path):
        text = f"{row.get('title', '')}\n{row.get('text', '')}".strip()
        documents.append(pieces(text, limit))
        if docs is not None and len(documents) >= docs:
            break
    return documents


def write_round(documents: list[list[str]], dimension: int, embedder_name: str) -> float:
    """Seconds to write every document into a new index and commit it."""
    from rag.index.docstore import NewChunk
    from rag.index.manifest import Manifest
    from rag.index.writer import open_writer

    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal((len(d), dimension)).astype(np.float32) for d in documents]
    for v in vectors:
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    manifest = Manifest(
        embedder=embedder_name,
        dimension=dimension,
        tokenizer="benchmark",
        chunk_tokens=200,
        chunk_overlap=24,
    )
    with tempfile.TemporaryDirectory(prefix="driver-write-") as tmp:
        started = time.perf_counter()
        with open_writer(Path(tmp) / "index", manifest) as writer:
            for n, (texts, vecs) in enumerate(zip(documents, vectors, strict=True)):
                chunks, start = [], 0
                for text in texts:
                    end = start + len(text)
                    chunks.append(NewChunk(text, None, None, None, start, end, len(text) // 4))
                    start = end + 1
                source = f"scifact/{n}.txt"
                writer.add_document(
                    source=source,
                    sha256=hashlib.sha256(source.encode()).hexdigest(),
                    kind="text",
                    size=start,
                    pages=1,
                    title=None,
                    chunks=chunks,
                    vectors=vecs,
                )
            writer.commit()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scifact", type=Path, default=SCIFACT, help="BEIR SciFact folder")
    parser.add_argument("--docs", type=int, default=None, help="abstracts to write (all)")
    parser.add_argument("--chunk-chars", type=int, default=800)
    parser.add_argument("--embed-sample", type=int, default=1000, help="chunk texts embedded")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)

    from rag.config import Settings
    from rag.retrieval.embeddings import Embedder

    documents = load_documents(args.scifact, args.docs, args.chunk_chars)
    chunks = sum(len(d) for d in documents)
    texts = [t for d in documents for t in d]
    sample = texts[:: max(1, len(texts) // args.embed_sample)][: args.embed_sample]
    settings = Settings.model_validate({})
    embedder = Embedder.from_settings(settings)
    embedder.embed(sample[:32], batch_size=settings.embed_batch_size)  # load and warm up
    print(
        f"{len(documents):,} documents, {chunks:,} chunks; embedder {embedder.name} "
        f"({embedder.active_runtime}); {len(sample):,} texts embedded per round",
        file=sys.stderr,
    )
    write_rates: list[float] = []
    embed_rates: list[float] = []
    for r in range(args.rounds):
        order = ("write", "embed") if r % 2 == 0 else ("embed", "write")
        for step in order:
            if step == "write":
                seconds = write_round(documents, embedder.dimension, embedder.name)
                write_rates.append(chunks / seconds)
            else:
                t0 = time.perf_counter()
                embedder.embed(sample, batch_size=settings.embed_batch_size)
                embed_rates.append(len(sample) / (time.perf_counter() - t0))
        print(
            f"round {r + 1}: write {write_rates[-1]:,.0f} chunks/s, "
            f"embed {embed_rates[-1]:,.1f} chunks/s",
            file=sys.stderr,
        )
    write, embed = statistics.median(write_rates), statistics.median(embed_rates)
    result: dict[str, Any] = {
        "documents": len(documents),
        "chunks": chunks,
        "embedder": embedder.name,
        "embed_sample": len(sample),
        "write_chunks_per_s": write_rates,
        "embed_chunks_per_s": embed_rates,
        "median_write_chunks_per_s": write,
        "median_embed_chunks_per_s": embed,
        "nodes_one_driver_absorbs": write / embed,
    }
    print(f"| write (driver) | {write:,.0f} chunks/s |")
    print(f"| embed ({embedder.name}) | {embed:,.1f} chunks/s |")
    print(f"| write / embed | {write / embed:,.1f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
