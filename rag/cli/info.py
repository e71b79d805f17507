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
    from rag.index.summary import describe

    settings = _settings(args)
    with Store.open(settings.index_dir) as store:
        data = describe(store, str(settings.index_dir), sources=args.sources or args.json)
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
