"""``rag ingest``: add files to an index, or show what a sync would change (``--dry-run``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rag.cli.options import settings as _settings
from rag.cli.output import print_json


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    ing = sub.add_parser(
        "ingest", parents=[common], help="add PDF, DOCX, HTML, text and markdown files to an index"
    )
    ing.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    ing.add_argument("--tokenizer", help="tokenizer that counts chunk tokens (default: the LLM's)")
    ing.add_argument("--chunk-tokens", type=int, help="maximum tokens per chunk")
    ing.add_argument("--chunk-overlap", type=int, help="tokens shared by consecutive chunks")
    ing.add_argument("--batch-size", type=int, help="chunks per embedding batch")
    ing.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes that parse and chunk files (default: the number of cores; 0: a thread, "
        "which cannot stop a hanging parse)",
    )
    ing.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="parse, chunk and embed on a Ray cluster: the one at ADDRESS, else the one "
        "RAY_ADDRESS or a `ray start` on this machine names, else a new local one (needs "
        "pip install 'rag-toolkit[ray]'); --workers then bounds the parse tasks",
    )
    ing.add_argument(
        "--sync",
        action="store_true",
        help="also delete documents whose file under PATH is gone; moved files keep their chunks",
    )
    ing.add_argument(
        "--dry-run", action="store_true", help="list what would change, change nothing"
    )
    ing.set_defaults(func=_cmd_ingest)


def _cmd_ingest(args: argparse.Namespace) -> int:
    from ingest import FileProgress, ingest

    settings = _settings(args, ingest_workers=args.workers)
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
            ray_address=args.ray,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print_json(report.model_dump())
        return 0
    if report.plan is not None:
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
    for warning in report.warnings:
        print(f"Warning: {warning}")
    return 0


def print_plan(report: Any) -> None:
    """Render a dry run's :class:`ingest.IngestPlan` (``rag ingest --dry-run``)."""
    plan = report.plan
    sections: list[tuple[str, list[str]]] = [
        ("added", plan.added),
        ("updated", plan.updated),
        ("renamed", [f"{r.source} -> {r.target}" for r in plan.renamed]),
        ("deleted", plan.deleted),
        ("unchanged", plan.unchanged),
    ]
    print(f"Dry run on {report.index}; nothing was changed.")
    for name, items in sections:
        print(f"{name}: {len(items)}")
        for item in items:
            print(f"  {item}")
    for s in report.files_skipped:
        print(f"skipped {s.path}: {s.reason}")
