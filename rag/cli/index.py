"""``rag index ...``: check an index's consistency and recall, repair its CURRENT, remove
documents, merge its segments."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import IndexCorrupt


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``index`` command group to the ``rag`` parser."""
    index = sub.add_parser("index", help="verify, repair, optimize or delete from an index")
    index_sub = index.add_subparsers(dest="index_command", required=True, metavar="INDEX_COMMAND")

    verify = index_sub.add_parser(
        "verify",
        parents=[common],
        help="check that every segment's vectors, chunks, postings and the manifest agree",
        description="Exit 0 when the committed snapshot and every segment it lists are "
        f"consistent; otherwise list the problems and exit {IndexCorrupt.exit_code}.",
    )
    verify.add_argument(
        "--recall",
        action="store_true",
        help="also measure recall@10 of each approximate (IVF) segment against exact search, "
        "with stored vectors that trained nothing as questions, each left out of its own answers",
    )
    verify.add_argument(
        "--queries",
        type=int,
        default=200,
        metavar="N",
        help="stored vectors sampled per segment by --recall (default: 200)",
    )
    verify.add_argument(
        "--questions",
        type=Path,
        metavar="FILE",
        help="measure recall with these questions instead (implies --recall): a text file with "
        'one question per line, or a BEIR queries.jsonl (its "text" fields), embedded with the '
        "index's embedder. Real questions lie further from the chunks than chunks from each "
        "other, and often get less recall than stored vectors show",
    )
    verify.set_defaults(func=_cmd_verify)

    optimize = index_sub.add_parser(
        "optimize",
        parents=[common],
        help="merge every segment into one, dropping deleted rows",
        description="Merge the index's segments into one segment without the rows of deleted "
        "documents, with an approximate (IVF) vector index when it holds 100,000 chunks or "
        "more; nothing is embedded again. Writes after each ingest merge small segments on "
        "their own; run this after large deletions or before serving a large index.",
    )
    optimize.set_defaults(func=_cmd_optimize)

    recover = index_sub.add_parser(
        "recover",
        parents=[common],
        help="point CURRENT at the newest snapshot that verifies, when CURRENT is damaged",
        description="When CURRENT is missing, damaged or names a snapshot that does not verify, "
        "make it name the newest snapshot on disk that opens and verifies. Nothing is deleted; "
        "an index whose CURRENT is sound is left as it is.",
    )
    recover.set_defaults(func=_cmd_recover)

    delete = index_sub.add_parser(
        "delete",
        parents=[common],
        help="remove documents by source path or glob, in one atomic commit",
    )
    delete.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a source path as stored (see 'rag info --sources') or a glob such as '*.pdf'",
    )
    delete.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="delete without asking; needed with --json or without a terminal when more than "
        "one document, or every document, matches",
    )
    delete.description = (
        "Deleting more than one document, or every document, asks for confirmation first."
    )
    delete.set_defaults(func=_cmd_delete)


def _index_dir(args: argparse.Namespace) -> Any:
    return Settings.load(args.config, index_dir=args.index).index_dir


def _cmd_verify(args: argparse.Namespace) -> int:
    from rag.index.reader import Store
    from rag.index.snapshots import current_name, snapshot_names
    from rag.index.verify import verify

    index_dir = _index_dir(args)
    problems = verify(index_dir)
    data: dict[str, Any] = {"index": str(index_dir), "ok": not problems, "problems": problems}
    data.update(current=current_name(index_dir), snapshots=snapshot_names(index_dir))
    if not problems:
        with Store.open(index_dir) as store:
            docs, chunks = store.counts()
            data.update(snapshot=store.snapshot.name, documents=docs, chunks=chunks)
            data["segments"] = len(store.segments)
        if args.recall or args.questions is not None:
            from rag.index.verify import measure_recall

            asked = None if args.questions is None else _embedded_questions(args, index_dir)
            data["recall"] = [
                dataclasses.asdict(r)
                for r in measure_recall(index_dir, queries=args.queries, questions=asked)
            ]
            if args.questions is not None:
                data["questions_file"] = str(args.questions)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif problems:
        print(f"error: the index in {index_dir} is inconsistent:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        found = ", ".join(data["snapshots"]) or "none"
        print(f"CURRENT holds {data['current']!r}; snapshots on disk: {found}.", file=sys.stderr)
        print(
            f"Point CURRENT at the newest snapshot that verifies (nothing is deleted) with: "
            f"rag index recover --index {index_dir}\n"
            "or rebuild into a new directory with: rag ingest PATH --index NEW_DIR",
            file=sys.stderr,
        )
    else:
        print(
            f"{index_dir}: OK ({data['snapshot']}: {data['documents']} documents, "
            f"{data['chunks']} chunks in {data['segments']} segment(s), one vector and one "
            "posting entry each)"
        )
        if "recall" in data:
            asked = (
                "stored vectors that trained nothing as questions"
                if args.questions is None
                else f"questions from {args.questions}"
            )
            for r in data["recall"]:
                print(
                    f"  {r['segment']}: recall@10 {r['recall']:.3f} against exact search "
                    f"({r['queries']} {asked}; {r['chunks']} chunks, "
                    f"nlist {r['nlist']}, nprobe {r['nprobe']})"
                )
            if not data["recall"]:
                print("  every segment is searched exactly (recall 1.0)")
    return IndexCorrupt.exit_code if problems else 0


def read_questions(path: Path) -> list[str]:
    """The questions of ``path``: one per line, or the "text" of each line of a BEIR
    queries.jsonl (a file whose lines are JSON objects)."""
    from rag.errors import ConfigError

    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the questions in {path}: {exc}.") from exc
    lines = [line for line in lines if line]
    if lines and all(line.startswith("{") for line in lines):
        questions = []
        for n, line in enumerate(lines, start=1):
            try:
                text = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                text = None
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(
                    f'Line {n} of {path} has no "text" field: give a BEIR queries.jsonl '
                    "whose every line has one, or a text file with one question per line."
                )
            questions.append(text.strip())
        lines = questions
    if not lines:
        raise ConfigError(
            f"{path} holds no questions: write one question per line, or give a BEIR queries.jsonl."
        )
    return lines


def _embedded_questions(args: argparse.Namespace, index_dir: Path) -> Any:
    """The questions of ``--questions``, embedded as the index embeds a question."""
    from rag.cli.options import settings
    from rag.index.manifest import check_compatible, read_manifest
    from rag.index.snapshots import current_snapshot
    from rag.retrieval.embeddings import Embedder

    questions = read_questions(args.questions)
    manifest = read_manifest(current_snapshot(index_dir))
    embedder = Embedder.from_settings(settings(args), manifest.embedder)
    check_compatible(manifest, embedder=embedder.name, index_dir=index_dir)
    return embedder.embed(questions)


def _cmd_optimize(args: argparse.Namespace) -> int:
    from rag.index.optimizing import optimize

    index_dir = _index_dir(args)
    result = optimize(index_dir)
    data: dict[str, Any] = {"index": str(index_dir), "changed": result is not None}
    if result is not None:
        before, after = result
        data["before"] = _shape(before)
        data["after"] = _shape(after)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif result is None:
        print(f"{index_dir}: already one segment without deleted rows; unchanged.")
    else:
        b, a = data["before"], data["after"]
        print(
            f"{index_dir}: {b['segments']} segment(s), {b['deleted_chunks']} deleted chunk(s) "
            f"-> {a['segments']} segment(s) ({a['chunks']} chunks, vectors "
            f"{'/'.join(a['vectors'])})."
        )
    return 0


def _shape(m: Any) -> dict[str, Any]:
    return {
        "schema_version": m.schema_version,
        "segments": len(m.segments) if m.segmented else 1,
        "chunks": m.chunks,
        "deleted_chunks": sum(s.deleted_chunks for s in m.segments),
        "vectors": sorted({s.vectors.kind for s in m.segments}) or ["flat"],
    }


def _cmd_recover(args: argparse.Namespace) -> int:
    from rag.index.recovery import recover

    index_dir = _index_dir(args)
    result = recover(index_dir)
    if args.json:
        data = {"index": str(index_dir)} | dataclasses.asdict(result)
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    for name, problems in result.rejected.items():
        print(f"skipped {name}: {problems[0]}", file=sys.stderr)
    if result.changed:
        print(f"{index_dir}: CURRENT now names {result.snapshot} (was {result.previous!r}).")
    else:
        print(f"{index_dir}: CURRENT already names {result.snapshot}, which verifies; unchanged.")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from rag.index.documents import delete_documents, match_documents

    index_dir = _index_dir(args)
    # Matched and confirmed before the writer opens: a refusal changes nothing.
    matched, unmatched, total = match_documents(index_dir, args.sources)
    several = len(matched) > 1 or (len(matched) == 1 and total == 1)
    if several and not args.yes and not _confirmed(args, matched, total):
        print("Nothing was deleted.", file=sys.stderr)
        return 1
    removed: list[Any] = []
    if matched:  # nothing to remove: no lock, no copy of the snapshot
        only = {d.source for d in matched}
        removed, unmatched = delete_documents(index_dir, args.sources, only=only)
    if args.json:
        data = {
            "index": str(index_dir),
            "removed": [{"source": d.source, "chunks": d.chunks} for d in removed],
            "chunks_removed": sum(d.chunks for d in removed),
            "unmatched": unmatched,
        }
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for d in removed:
            print(f"removed {d.source} ({d.chunks} chunks)")
        for pattern in unmatched:
            print(f"no document matches {pattern!r} (see: rag info --sources)", file=sys.stderr)
        print(f"{len(removed)} document(s) removed from {index_dir}.")
    return 0 if removed or not unmatched else 1


_SHOWN = 10  # documents listed before asking


def _confirmed(args: argparse.Namespace, matched: list[Any], total: int) -> bool:
    """Ask on the terminal before deleting several documents; refuse where nobody can answer."""
    from rag.errors import ConfigError

    n = len(matched)
    what = f"{n} of the {total} documents" if n < total else f"every document ({n})"
    if args.json or not sys.stdin.isatty():
        raise ConfigError(
            f"{' '.join(args.sources)} matches {what} in the index; nothing was deleted. "
            "Add --yes to delete them without asking."
        )
    print(f"{' '.join(args.sources)} matches {what}:")
    for d in matched[:_SHOWN]:
        print(f"  {d.source} ({d.chunks} chunks)")
    if n > _SHOWN:
        print(f"  ... and {n - _SHOWN} more")
    try:
        answer = input(f"Delete {n} document{'s' if n > 1 else ''}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
