"""Per-file limits: a file too large or too slow to read is skipped with a reason, the run goes on."""

from __future__ import annotations

from pathlib import Path

from pypdf import PdfReader, PdfWriter

from ingest import ingest
from rag.config import Settings
from rag.index.reader import Store
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import ATTENTION_PDF
from tests.ingest.test_pipeline import _pdf_bytes


def test_a_file_over_max_file_mb_is_skipped(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "small.txt").write_text("A small file about tea.\n", encoding="utf-8")
    (docs / "big.txt").write_text("A larger file about coffee. " * 100, encoding="utf-8")
    limited = Settings.model_validate({"max_file_mb": 1000 / 2**20})  # 1,000 bytes
    report = ingest([docs], tmp_path / "index", limited, embedder=embedder, tokenizer=tokenizer)
    assert report.added == 1
    [skipped] = report.files_skipped
    assert Path(skipped.path).name == "big.txt"
    assert "too large" in skipped.reason and "max_file_mb" in skipped.reason
    with Store.open(tmp_path / "index") as store:
        assert [Path(d.source).name for d in store.documents()] == ["small.txt"]


def test_a_file_over_file_timeout_is_skipped(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    writer = PdfWriter()
    for page in PdfReader(ATTENTION_PDF).pages[:3]:
        writer.add_page(page)
    (docs / "slow.pdf").write_bytes(_pdf_bytes(writer))
    (docs / "quick.txt").write_text("A quick file about tea.\n", encoding="utf-8")
    # The limit is checked between pages: a one-page text file gets through, the PDF does not.
    limited = Settings.model_validate({"file_timeout": 1e-9})
    report = ingest([docs], tmp_path / "index", limited, embedder=embedder, tokenizer=tokenizer)
    assert report.added == 1
    [skipped] = report.files_skipped
    assert Path(skipped.path).name == "slow.pdf"
    assert "file_timeout" in skipped.reason and "page 2 of 3" in skipped.reason
    assert Settings.model_validate({}).file_timeout == 120
    assert Settings.model_validate({}).max_file_mb == 200
