"""A corpus of real files in which no two files have the same content, for ingest benchmarks.

    python benchmarks/nodup_corpus.py OUT_DIR [--abstracts N] [--documents DIR] [--scifact DIR]

``OUT_DIR`` receives:

* ``pdf/``: copies of the PDFs under the shared documents folder (``../shared/data/documents/pdf``:
  clean, highlighted, multi-column CJK, and one without a text layer);
* ``scifact/<id>.txt``: the SciFact corpus abstracts, one per file, the title as the first line
  and the abstract after it, read with the project's own BEIR reader (``rag.eval.beir``); the
  first N in corpus order, all 5,183 by default.

The shared documents folder holds the same essay twice (LF and CRLF), which an ingest that embeds
each distinct chunk text once gets for free; this corpus has no such duplicates, so every file
costs its full parse, chunking and embedding. Every file's SHA-256 is checked: a file whose
content equals an earlier one's is not written (and is named in the report), and the finished
folder is hashed again to confirm that all its files differ.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()
DEFAULT_DOCUMENTS = SHARED_DATA / "documents"
DEFAULT_SCIFACT = SHARED_DATA / "scifact" / "derived_beir_style"


@dataclass
class CorpusReport:
    """What was written: counts per kind, the duplicates left out, and the final hash check."""

    out_dir: Path
    pdfs: int = 0
    abstracts: int = 0
    dropped: list[str] = field(default_factory=list)  # "NAME: same content as OTHER"
    distinct_hashes: int = 0

    @property
    def files(self) -> int:
        return self.pdfs + self.abstracts

    def summary(self) -> str:
        lines = [
            f"Wrote {self.files:,} files to {self.out_dir}: {self.pdfs} PDFs, "
            f"{self.abstracts:,} SciFact abstracts.",
            f"Distinct SHA-256: {self.distinct_hashes:,} of {self.files:,} files "
            f"({'no two files have equal content' if self.distinct_hashes == self.files else 'DUPLICATES FOUND'}).",
            f"Exact duplicates dropped: {len(self.dropped)}",
        ]
        lines += [f"  {d}" for d in self.dropped]
        return "\n".join(lines)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def abstract_texts(scifact: Path, limit: int | None) -> Iterator[tuple[str, str]]:
    """``(file stem, file text)`` of the first ``limit`` abstracts (all when None): the title as
    the first line, then the abstract."""
    from rag.eval.beir import iter_corpus, load_beir

    corpus = load_beir(scifact).corpus
    for n, record in enumerate(iter_corpus(corpus)):
        if limit is not None and n >= limit:
            return
        title = (record.get("title") or "").strip()
        body = (record.get("text") or "").strip()
        text = f"{title}\n{body}\n" if title else f"{body}\n"
        yield str(record["_id"]), text


def build(
    out_dir: Path,
    abstracts: int | None = None,
    documents: Path = DEFAULT_DOCUMENTS,
    scifact: Path = DEFAULT_SCIFACT,
) -> CorpusReport:
    """Write the corpus into ``out_dir`` (created; it must not hold files already)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise SystemExit(f"{out_dir} is not empty; give a new or empty folder.")
    pdf_dir = documents / "pdf"
    pdfs = sorted(p for p in pdf_dir.glob("*") if p.is_file() and p.suffix.lower() == ".pdf")
    if not pdfs:
        raise SystemExit(f"No PDFs found under {pdf_dir}")
    report = CorpusReport(out_dir=out_dir)
    seen: dict[str, str] = {}  # sha256 -> the file name that holds that content

    def keep(name: str, data: bytes) -> bool:
        digest = sha256_of(data)
        if digest in seen:
            report.dropped.append(f"{name}: same content as {seen[digest]}")
            return False
        seen[digest] = name
        return True

    (out_dir / "pdf").mkdir(parents=True)
    for path in pdfs:
        name = f"pdf/{path.name}"
        if keep(name, path.read_bytes()):
            shutil.copyfile(path, out_dir / name)
            report.pdfs += 1
    (out_dir / "scifact").mkdir()
    for stem, text in abstract_texts(scifact, abstracts):
        name = f"scifact/{stem}.txt"
        data = text.encode("utf-8")
        if (out_dir / name).exists():
            raise SystemExit(f"Two SciFact records share the id {stem}")
        if keep(name, data):
            (out_dir / name).write_bytes(data)
            report.abstracts += 1
    report.distinct_hashes = len(distinct_hashes(out_dir))
    return report


def distinct_hashes(root: Path) -> set[str]:
    """The SHA-256 of every file under ``root``, read back from disk."""
    return {sha256_of(p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="new or empty folder to write")
    parser.add_argument(
        "--abstracts", type=int, default=None, help="SciFact abstracts to write (default: all)"
    )
    parser.add_argument(
        "--documents", type=Path, default=DEFAULT_DOCUMENTS, help="folder whose pdf/ is copied"
    )
    parser.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT, help="BEIR SciFact folder")
    args = parser.parse_args(argv)
    if args.abstracts is not None and args.abstracts < 0:
        parser.error("--abstracts must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = build(args.out_dir.resolve(), args.abstracts, args.documents, args.scifact)
    print(report.summary())
    return 0 if report.distinct_hashes == report.files else 1


if __name__ == "__main__":
    sys.exit(main())
