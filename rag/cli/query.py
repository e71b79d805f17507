"""``rag ask`` and ``rag chat``: questions to an index, answered with citations."""

from __future__ import annotations

import argparse
from typing import Any

from rag.cli.options import filters as _filters
from rag.cli.options import llm_options as _llm_options
from rag.cli.options import settings as _settings
from rag.cli.output import print_json, print_quotes, print_sources


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    ask = sub.add_parser("ask", parents=[common], help="answer a question, citing sources")
    ask.add_argument("question")
    _llm_options(ask)
    ask.add_argument("--no-stream", action="store_true", help="print the answer when complete")
    ask.set_defaults(func=_cmd_ask)

    chat = sub.add_parser("chat", parents=[common], help="a conversation about your documents")
    _llm_options(chat)
    chat.set_defaults(func=_cmd_chat)


def _cmd_ask(args: argparse.Namespace) -> int:
    from rag.engine import RAG

    settings = _settings(args)
    filters = _filters(args)
    with RAG.open(settings.index_dir, settings) as rag:
        if args.json or args.no_stream or settings.resolved_answer_mode == "extract":
            answer = rag.ask(args.question, filters=filters)
            if args.json:
                print_json(answer.model_dump())
                return 0
            if answer.mode == "extract":
                print_quotes(answer)
            else:
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
            if settings.resolved_answer_mode == "extract":
                answer = chat.send(message, filters=filters)
                print_quotes(answer)
                if answer.passages:
                    print_sources(answer)
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
