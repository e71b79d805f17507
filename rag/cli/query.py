"""``rag ask``, ``rag chat`` and ``rag info``: questions to an index, and what it holds."""

from __future__ import annotations

import argparse
from typing import Any

from rag.cli.options import filters as _filters
from rag.cli.options import llm_options as _llm_options
from rag.cli.options import settings as _settings
from rag.cli.output import display_path, print_json, print_sources


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    ask = sub.add_parser("ask", parents=[common], help="answer a question, citing sources")
    ask.add_argument("question")
    _llm_options(ask)
    ask.add_argument("--no-stream", action="store_true", help="print the answer when complete")
    ask.set_defaults(func=_cmd_ask)

    chat = sub.add_parser("chat", parents=[common], help="a conversation about your documents")
    _llm_options(chat)
    chat.set_defaults(func=_cmd_chat)

    info = sub.add_parser("info", parents=[common], help="describe an index")
    info.add_argument("--sources", action="store_true", help="list every document")
    info.set_defaults(func=_cmd_info)


def _cmd_ask(args: argparse.Namespace) -> int:
    from rag.engine import RAG

    settings = _settings(args)
    filters = _filters(args)
    with RAG.open(settings.index_dir, settings) as rag:
        if args.json or args.no_stream:
            answer = rag.ask(args.question, filters=filters)
            if args.json:
                print_json(answer.model_dump())
                return 0
            print(answer.answer)
        else:
            stream = rag.stream(args.question, filters=filters)
            for piece in stream:
                print(piece, end="", flush=True)
            print()
            assert stream.answer is not None
            answer = stream.answer
    print_sources(answer)
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from rag.answer import Answer
    from rag.engine import RAG

    settings = _settings(args)
    filters = _filters(args)  # a bad --pages is refused before the model loads
    with RAG.open(settings.index_dir, settings) as rag:
        chat = rag.chat()
        print("Ask about your documents. /reset forgets the conversation, /exit leaves.")
        while True:
            try:
                message = input("\n> ").strip()
            except EOFError:
                print()
                return 0
            if not message:
                continue
            if message in ("/exit", "/quit"):
                return 0
            if message == "/reset":
                chat.reset()
                print("(conversation and instructions forgotten)")
                continue
            result = chat.stream(message, filters=filters)
            if isinstance(result, Answer):
                print(result.answer)
                continue
            for piece in result:
                print(piece, end="", flush=True)
            print()
            assert result.answer is not None
            print_sources(result.answer)


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
    if args.sources:
        for d in data["sources"]:
            print(f"  {d['chunks']:>5} chunks  {d['kind']:<8} {display_path(d['source'])}")
    return 0
