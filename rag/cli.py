"""The ``rag`` command: parses arguments, calls the library, renders results.

Library errors (:class:`rag.errors.RagError`) become one-line messages and exit codes here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.cli_options import filters as _filters
from rag.cli_options import llm_options as _llm_options
from rag.cli_options import settings as _settings
from rag.errors import RagError

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_libraries(args.verbose)
    try:
        result: int = args.func(args)
        return result
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted; nothing was changed.", file=sys.stderr)
        return EXIT_INTERRUPTED


# ----------------------------------------------------------------------------- arguments


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rag", description="Grounded, cited answers from your own documents."
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="settings file (TOML); default ./rag.toml")
    common.add_argument("--index", type=Path, help="index directory (default .rag-index)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    common.add_argument("--embedder", help="sentence-transformers model name or path")

    ing = sub.add_parser(
        "ingest", parents=[common], help="add PDF, DOCX, HTML, text and markdown files to an index"
    )
    ing.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    ing.add_argument("--tokenizer", help="tokenizer that counts chunk tokens (default: the LLM's)")
    ing.add_argument("--chunk-tokens", type=int, help="maximum tokens per chunk")
    ing.add_argument("--chunk-overlap", type=int, help="tokens shared by consecutive chunks")
    ing.add_argument("--batch-size", type=int, help="chunks per embedding batch")
    ing.add_argument(
        "--sync",
        action="store_true",
        help="also delete documents whose file under PATH is gone; moved files keep their chunks",
    )
    ing.add_argument(
        "--dry-run", action="store_true", help="list what would change, change nothing"
    )
    ing.set_defaults(func=_cmd_ingest)

    ask = sub.add_parser("ask", parents=[common], help="answer a question, citing sources")
    ask.add_argument("question")
    _llm_options(ask)
    ask.add_argument("--no-stream", action="store_true", help="print the answer when complete")
    ask.set_defaults(func=_cmd_ask)

    chat = sub.add_parser("chat", parents=[common], help="a conversation about your documents")
    _llm_options(chat)
    chat.set_defaults(func=_cmd_chat)

    ev = sub.add_parser("eval", parents=[common], help="measure retrieval and answer quality")
    data = ev.add_mutually_exclusive_group(required=True)
    data.add_argument("--beir", type=Path, metavar="DIR", help="BEIR data set directory")
    data.add_argument("--squad", type=Path, metavar="FILE", help="SQuAD-format JSON file")
    ev.add_argument(
        "--mode",
        dest="eval_mode",
        choices=("dense", "lexical", "hybrid", "all"),
        help="retrieval mode(s) to evaluate (default: all for --beir, hybrid for --squad)",
    )
    ev.add_argument("--limit", type=int, help="evaluate only N questions")
    ev.add_argument("--tokenizer", help="tokenizer that counts chunk tokens (default: the LLM's)")
    _llm_options(ev, retrieval=False)
    ev.epilog = "--index names where the evaluation index is built (default: the cache)."
    ev.set_defaults(func=_cmd_eval)

    info = sub.add_parser("info", parents=[common], help="describe an index")
    info.add_argument("--sources", action="store_true", help="list every document")
    info.set_defaults(func=_cmd_info)

    # Command groups that live in modules of their own register here.
    from rag import cli_index, cli_llm

    cli_llm.register(sub, common)
    cli_index.register(sub, common)
    return p


# ----------------------------------------------------------------------------- commands


def _cmd_ingest(args: argparse.Namespace) -> int:
    from ingest import FileProgress, ingest

    settings = _settings(args)
    bar = None
    totals = {"pages": 0, "chunks": 0}
    started = time.monotonic()

    def progress(p: FileProgress) -> None:
        nonlocal bar
        if args.json:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=p.total, unit="file", file=sys.stderr, dynamic_ncols=True)
        totals["pages"] += p.pages
        totals["chunks"] += p.chunks
        elapsed = max(time.monotonic() - started, 1e-6)
        bar.set_postfix_str(
            f"{totals['pages']} pages ({totals['pages'] / elapsed:.1f}/s), "
            f"{totals['chunks']} chunks ({totals['chunks'] / elapsed:.1f}/s)",
            refresh=False,
        )
        bar.set_description(Path(p.path).name[:30])
        bar.update(1)

    try:
        report = ingest(
            args.paths,
            settings.index_dir,
            settings,
            progress=progress,
            sync=args.sync,
            dry_run=args.dry_run,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        _print_json(report.model_dump())
        return 0
    if report.plan is not None:
        from rag.cli_index import print_plan

        print_plan(report)
        return 0
    print(
        f"Ingested {report.files_ingested} file(s) ({report.added} new, {report.updated} "
        f"changed), {report.unchanged} unchanged, {len(report.files_skipped)} skipped: "
        f"{report.pages} pages, {report.chunks_added} chunks added in {report.seconds:.1f}s."
    )
    if report.renamed or report.deleted:
        print(f"{report.renamed} moved file(s) kept their chunks; {report.deleted} deleted.")
    if report.pages_without_text:
        print(f"{report.pages_without_text} PDF page(s) had no text layer and need OCR.")
    for s in report.files_skipped:
        print(f"  skipped {s.path}: {s.reason}")
    print(
        f"Index {settings.index_dir}: {report.documents_total} documents, "
        f"{report.chunks_total} chunks."
    )
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from rag.engine import RAG

    settings = _settings(args)
    filters = _filters(args)
    with RAG.open(settings.index_dir, settings) as rag:
        if args.json or args.no_stream:
            answer = rag.ask(args.question, filters=filters)
            if args.json:
                _print_json(answer.model_dump())
                return 0
            print(answer.answer)
        else:
            stream = rag.stream(args.question, filters=filters)
            for piece in stream:
                print(piece, end="", flush=True)
            print()
            assert stream.answer is not None
            answer = stream.answer
    _print_sources(answer)
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
            _print_sources(result.answer)


def _cmd_eval(args: argparse.Namespace) -> int:
    from rag.evaluation import MODES, evaluate_beir

    settings = _settings(args)
    modes = MODES if args.eval_mode in (None, "all") else (args.eval_mode,)
    if args.beir:
        results = evaluate_beir(args.beir, settings, modes, limit=args.limit, index_dir=args.index)
    else:
        from rag.evaluation_squad import evaluate_squad

        modes = ("hybrid",) if args.eval_mode is None else modes
        results = evaluate_squad(
            args.squad, settings, modes, limit=args.limit, index_dir=args.index
        )
    if args.json:
        _print_json(results)
        return 0
    rows = [(mode, m) for mode, m in results.items() if not mode.startswith("_")]
    keys = [k for k in rows[0][1] if k not in ("queries", "seconds")] if rows else []
    print(f"{'mode':<10}" + "".join(f"{k:>14}" for k in keys) + f"{'seconds':>10}")
    for mode, m in rows:
        cells = "".join(f"{'-' if m[k] is None else format(m[k], '.4f'):>14}" for k in keys)
        print(f"{mode:<10}{cells}{m['seconds']:>10.1f}")
    run = results.get("_run", {})
    if run:
        print("; ".join(f"{k}: {v}" for k, v in run.items()))
    return 0


def _print_sources(answer: Any) -> None:
    if answer.abstained:
        print("\n(The documents do not answer this. Nearest passages:)")
        shown = answer.passages
    else:
        note = " (attributed by overlap; the model cited none)" if answer.citations_inferred else ""
        print(f"\nSources{note}:")
        shown = answer.citations or answer.passages
    for c in shown:
        label = (
            f" (page label {c.page_label})" if c.page_label and c.page_label != str(c.page) else ""
        )
        snippet = " ".join(c.text.split())[:160]
        where = f" > {c.section}" if c.section and c.page is None else ""
        similarity = c.dense_score if c.dense_score is not None else c.score
        print(
            f"  [{c.n}] {_display_path(c.source)}{_page(c.page)}{label}{where}"
            f"  similarity {similarity:.3f}"
        )
        if c.also_in:
            copies = "; ".join(f"{_display_path(a.source)}{_page(a.page)}" for a in c.also_in)
            print(f"      also in: {copies}")
        print(f"      {snippet}{'...' if len(c.text) > 160 else ''}")


def _page(page: int | None) -> str:
    return f", page {page}" if page is not None else ""


def _display_path(source: str) -> str:
    try:
        return os.path.relpath(source)
    except ValueError:
        return source


def _cmd_info(args: argparse.Namespace) -> int:
    from rag.store import Store

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
        _print_json(data)
        return 0
    for key in ("index", "documents", "chunks", "embedder", "dimension", "index_type",
                "tokenizer", "chunk_tokens", "chunk_overlap", "updated_at"):  # fmt: skip
        print(f"{key:>14}: {data[key]}")
    if args.sources:
        for d in data["sources"]:
            print(f"  {d['chunks']:>5} chunks  {d['kind']:<8} {_display_path(d['source'])}")
    return 0


# ----------------------------------------------------------------------------- helpers


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def _version() -> str:
    from rag import __version__

    return __version__


def _quiet_libraries(verbose: bool) -> None:
    # The CLI owns the process, so it may silence the chatty model libraries.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for name in ("pypdf", "faiss", "sentence_transformers", "transformers", "httpx"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
