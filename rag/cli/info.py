"""``rag info``: what an index holds and how it was built."""

from __future__ import annotations

import argparse
from typing import Any

from rag.cli.options import settings as _settings
from rag.cli.output import display_path, print_json


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    info = sub.add_parser("info", parents=[common], help="describe an index")
    info.add_argument("--sources", action="store_true", help="list every document")
    info.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from rag.index.reader import Store

    settings = _settings(args)
    with Store.open(settings.index_dir) as store:
        m = store.manifest
        docs, chunks = store.counts()
        data: dict[str, Any] = {
            "index": str(settings.index_dir),
            "snapshot": store.snapshot.name,
            "documents": docs,
            "chunks": chunks,
            "embedder": m.embedder,
            "dimension": m.dimension,
            "index_type": m.index_type,
            "tokenizer": m.tokenizer,
            "chunk_tokens": m.chunk_tokens,
            "chunk_overlap": m.chunk_overlap,
            "schema_version": m.schema_version,
            "segments": [
                {
                    "name": i.name,
                    "chunks": i.live_chunks,
                    "deleted_chunks": i.deleted_chunks,
                    "vectors": i.vectors.kind,
                }
                for i in m.segments
            ],
            "created_at": m.created_at,
            "updated_at": m.updated_at,
        }
        if args.sources or args.json:
            data["sources"] = [
                {"source": d.source, "kind": d.kind, "pages": d.pages, "chunks": d.chunks}
                for d in store.documents()
            ]
    if args.json:
        print_json(data)
        return 0
    for key in ("index", "documents", "chunks", "embedder", "dimension", "index_type",
                "tokenizer", "chunk_tokens", "chunk_overlap", "updated_at"):  # fmt: skip
        print(f"{key:>14}: {data[key]}")
    if data["segments"]:
        parts = [f"{s['chunks']} {s['vectors']}" for s in data["segments"]]
        print(f"{'segments':>14}: {len(parts)} ({', '.join(parts)} chunks)")
    if args.sources:
        for d in data["sources"]:
            print(f"  {d['chunks']:>5} chunks  {d['kind']:<8} {display_path(d['source'])}")
    return 0
