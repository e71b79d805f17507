"""Loaders on real documents and on every kind of bad input a user's folder holds.

Bad inputs are generated in ``tmp_path`` from the real documents (no mocks): truncated and
garbled PDFs, PDFs encrypted by pypdf, PNG bytes under a .pdf name, random bytes under a .txt name.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from ingest.loaders import LoadedFile, LoadError, discover, load
from tests.conftest import ATTENTION_PDF, DOCUMENTS, NO_TEXT_PDF

TEXT_DIR = DOCUMENTS / "text"
PDF_DIR = DOCUMENTS / "pdf"
CJK_PDF = PDF_DIR / "zh_broker_report_xinxiwang_000876.pdf"
LLAMA2_PDF = PDF_DIR / "llama2_paper_first4pages.pdf"
README_MD = TEXT_DIR / "llama2c_README.md"


def _load(path: Path) -> LoadedFile:
    return load(path, path.read_bytes())


def _pdf_bytes(writer: PdfWriter) -> bytes:
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _png_bytes(width: int = 4, height: int = 4) -> bytes:
    """A small but valid PNG image (red square)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def attention() -> LoadedFile:
    return _load(ATTENTION_PDF)


# --- real PDFs ---


def test_pdf_pages_are_one_based_physical_with_labels(attention: LoadedFile) -> None:
    n_pages = len(PdfReader(ATTENTION_PDF).pages)
    assert attention.kind == "pdf"
    assert [p.number for p in attention.pages] == list(range(1, n_pages + 1))
    assert [p.label for p in attention.pages] == [str(i) for i in range(1, n_pages + 1)]
    assert attention.pages_without_text == 0
    assert "Attention Is All You Need" in attention.pages[0].text
    assert attention.title == "Attention is All you Need"
    assert all("\r" not in p.text for p in attention.pages)


def test_pdf_custom_page_labels_are_kept(tmp_path: Path) -> None:
    """Front matter numbered i, ii and body numbered from 1: labels differ from numbers."""
    writer = PdfWriter(clone_from=ATTENTION_PDF)
    n_pages = len(writer.pages)
    writer.set_page_label(0, 1, style="/r")
    writer.set_page_label(2, n_pages - 1, style="/D", prefix="A-", start=1)
    path = tmp_path / "labelled.pdf"
    path.write_bytes(_pdf_bytes(writer))

    loaded = _load(path)
    assert [p.number for p in loaded.pages] == list(range(1, n_pages + 1))
    expected = ["i", "ii"] + [f"A-{i}" for i in range(1, n_pages - 1)]
    assert [p.label for p in loaded.pages] == expected


def test_pdf_page_numbers_stay_physical_around_a_blank_page(
    tmp_path: Path, attention: LoadedFile
) -> None:
    """A page without text is left out, and the pages after it keep their physical number."""
    writer = PdfWriter(clone_from=ATTENTION_PDF)
    writer.insert_blank_page(index=3)
    path = tmp_path / "with_blank.pdf"
    path.write_bytes(_pdf_bytes(writer))

    loaded = _load(path)
    n = len(attention.pages)
    assert loaded.pages_without_text == 1
    assert [p.number for p in loaded.pages] == [1, 2, 3, *range(5, n + 2)]
    by_number = {p.number: p.text for p in loaded.pages}
    assert by_number[5] == attention.pages[3].text
    assert by_number[n + 1] == attention.pages[-1].text


@pytest.mark.parametrize(
    "path", [LLAMA2_PDF, CJK_PDF, PDF_DIR / "attention_is_all_you_need_arxiv_v5_highlighted.pdf"]
)
def test_other_real_pdfs_load_every_page(path: Path) -> None:
    loaded = _load(path)
    n_pages = len(PdfReader(path).pages)
    assert [p.number for p in loaded.pages] == list(range(1, n_pages + 1))
    assert all(p.text.strip() for p in loaded.pages)


def test_cjk_pdf_keeps_chinese_text() -> None:
    loaded = _load(CJK_PDF)
    text = "".join(p.text for p in loaded.pages)
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert cjk > 1000
    assert "新希望" in text


def test_pdf_without_text_layer_asks_for_ocr() -> None:
    with pytest.raises(LoadError, match="OCR") as info:
        _load(NO_TEXT_PDF)
    assert "no text layer" in str(info.value)
    assert "12 pages" in str(info.value)


# --- text and markdown ---


def test_crlf_is_normalised() -> None:
    crlf = _load(TEXT_DIR / "paul_graham_essay.crlf.txt")
    lf = _load(TEXT_DIR / "paul_graham_essay.txt")
    assert b"\r\n" in (TEXT_DIR / "paul_graham_essay.crlf.txt").read_bytes()
    assert crlf.kind == "text"
    assert len(crlf.pages) == 1
    assert crlf.pages[0].number is None
    assert "\r" not in crlf.pages[0].text
    assert crlf.pages[0].text == lf.pages[0].text


def test_lone_carriage_returns_are_normalised(tmp_path: Path) -> None:
    path = tmp_path / "old_mac.txt"
    path.write_bytes(b"first line\rsecond line\r\nthird line\n")
    assert _load(path).pages[0].text == "first line\nsecond line\nthird line\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("caf\u00e9 \u2014 na\u00efve".encode("utf-8-sig"), "caf\u00e9 \u2014 na\u00efve"),
        ("caf\u00e9 \u4e2d\u6587".encode("utf-16"), "caf\u00e9 \u4e2d\u6587"),
        ("caf\u00e9 cr\u00e8me".encode("latin-1"), "caf\u00e9 cr\u00e8me"),
    ],
    ids=["utf8-bom", "utf16-bom", "latin1"],
)
def test_text_encodings(tmp_path: Path, data: bytes, expected: str) -> None:
    path = tmp_path / "enc.txt"
    path.write_bytes(data)
    assert _load(path).pages[0].text == expected


def test_markdown_headings_of_a_real_readme() -> None:
    loaded = _load(README_MD)
    page = loaded.pages[0]
    assert loaded.kind == "markdown"
    titles = [h for _, h in page.headings]
    assert titles[:3] == ["llama2.c", "feel the magic", "Meta's Llama 2 models"]
    assert "License" in titles
    assert loaded.title == "llama2.c"
    for offset, title in page.headings:
        assert offset == 0 or page.text[offset - 1] == "\n"
        line = page.text[offset:].split("\n", 1)[0]
        assert line.startswith("#")
        assert title in line
    # Every '#' line at column 0 in this README is a heading, and none is inside a code fence.
    lines = [i for i, line in enumerate(page.text.split("\n")) if line.startswith("## ")]
    assert len(page.headings) == len(lines)


def test_markdown_crlf_headings_match_lf(tmp_path: Path) -> None:
    lf = _load(README_MD)
    path = tmp_path / "readme_crlf.md"
    path.write_bytes(README_MD.read_bytes().replace(b"\n", b"\r\n"))
    crlf = _load(path)
    assert crlf.pages[0].text == lf.pages[0].text
    assert crlf.pages[0].headings == lf.pages[0].headings


def test_markdown_headings_inside_fenced_code_are_ignored(tmp_path: Path) -> None:
    real = README_MD.read_text(encoding="utf-8")
    block = "\n```bash\n# build the binary\nmake run\n## not a heading either\n```\n"
    path = tmp_path / "readme_plus_code.md"
    path.write_text(real + block + "\n## After the code\n\ntext\n", encoding="utf-8")
    titles = [h for _, h in _load(path).pages[0].headings]
    expected = [h for _, h in _load(README_MD).pages[0].headings] + ["After the code"]
    assert titles == expected


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("# A\n~~~\n# in tilde fence\n~~~\n# B\n", ["A", "B"]),
        # A fence is closed only by the same character: ~~~ inside ``` is code.
        ("# A\n```\n~~~\n# in code\n```\n# B\n", ["A", "B"]),
        # A longer fence is not closed by a shorter one.
        ("# A\n````md\n```\n# in code\n```\n````\n# B\n", ["A", "B"]),
        # Fences may be indented up to three spaces.
        ("# A\n  ```\n# in code\n  ```\n# B\n", ["A", "B"]),
        # An unclosed fence runs to the end of the document.
        ("# A\n```\n# in code\n", ["A"]),
        # A closing sequence needs a space before it; 'C#' is the heading's text.
        ("# Why C#\n\n## Title ##\n\n### F# and C# ###\n", ["Why C#", "Title", "F# and C#"]),
        # Not headings: no space after the hashes, seven hashes, indented code.
        ("#hashtag\n####### seven\n    # indented code\n# Real\n", ["Real"]),
    ],
    ids=["tilde", "mixed-fence", "long-fence", "indented-fence", "unclosed", "closing", "non"],
)
def test_markdown_heading_rules(tmp_path: Path, markdown: str, expected: list[str]) -> None:
    path = tmp_path / "doc.md"
    path.write_text("intro text\n\n" + markdown, encoding="utf-8")
    page = _load(path).pages[0]
    assert [h for _, h in page.headings] == expected
    for offset, _ in page.headings:
        assert page.text[offset:].lstrip(" ").startswith("#")


def test_headings_are_markdown_only(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("# not a heading in plain text\nbody\n", encoding="utf-8")
    loaded = _load(path)
    assert loaded.kind == "text"
    assert loaded.pages[0].headings == []
    assert loaded.title is None


# --- bad input ---


def test_truncated_pdf_is_corrupt(tmp_path: Path) -> None:
    data = ATTENTION_PDF.read_bytes()
    for fraction in (0.02, 0.5, 0.98):
        path = tmp_path / f"truncated_{fraction}.pdf"
        path.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(LoadError, match="corrupt"):
            _load(path)


def test_garbage_after_pdf_header_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pdf"
    path.write_bytes(b"%PDF-1.7\n" + random.Random(7).randbytes(20_000))
    with pytest.raises(LoadError, match="corrupt"):
        _load(path)


def test_damaged_pdf_never_escapes_as_another_error(tmp_path: Path) -> None:
    """Random byte damage: either some pages load or LoadError; never a raw pypdf exception."""
    data = ATTENTION_PDF.read_bytes()
    rng = random.Random(3)
    for trial in range(6):
        damaged = bytearray(data)
        for _ in range(200):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path = tmp_path / f"damaged_{trial}.pdf"
        path.write_bytes(bytes(damaged))
        try:
            loaded = _load(path)
        except LoadError as exc:
            assert str(exc)
        else:
            assert loaded.pages
            assert all(p.number is not None and p.number >= 1 for p in loaded.pages)


def test_pdf_with_user_password_needs_it(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=ATTENTION_PDF)
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="RC4-128")
    path = tmp_path / "locked.pdf"
    path.write_bytes(_pdf_bytes(writer))
    assert PdfReader(path).is_encrypted
    with pytest.raises(LoadError, match="password"):
        _load(path)


@pytest.mark.parametrize("algorithm", ["RC4-40", "RC4-128"])
def test_pdf_with_empty_user_password_loads(
    tmp_path: Path, attention: LoadedFile, algorithm: str
) -> None:
    """Encrypted only against editing: readers open it without asking, and so do we."""
    writer = PdfWriter(clone_from=ATTENTION_PDF)
    writer.encrypt(user_password="", owner_password="owner", algorithm=algorithm)
    path = tmp_path / "owner_only.pdf"
    path.write_bytes(_pdf_bytes(writer))
    assert PdfReader(path).is_encrypted

    loaded = _load(path)
    assert [p.number for p in loaded.pages] == [p.number for p in attention.pages]
    assert [p.text for p in loaded.pages] == [p.text for p in attention.pages]


@pytest.mark.parametrize("name", ["empty.pdf", "empty.txt", "empty.md"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(LoadError, match="empty file"):
        _load(path)


def test_whitespace_only_text(tmp_path: Path) -> None:
    path = tmp_path / "blank.md"
    path.write_bytes(b" \n\t\r\n  \n")
    with pytest.raises(LoadError, match="whitespace"):
        _load(path)


def test_binary_file_named_txt(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = rng.randbytes(3000) + b"\x00\x00\x00" + rng.randbytes(3000)
    path = tmp_path / "data.txt"
    path.write_bytes(data)
    with pytest.raises(LoadError, match="binary"):
        _load(path)


def test_binary_without_nul_bytes_named_txt(tmp_path: Path) -> None:
    """High bytes and control characters that are neither UTF-8 nor readable Latin-1."""
    rng = random.Random(5)
    data = bytes(
        rng.choice([*range(1, 9), *range(14, 32), *range(0x80, 0xA0)]) for _ in range(4000)
    )
    path = tmp_path / "blob.txt"
    path.write_bytes(data)
    with pytest.raises(LoadError, match="binary"):
        _load(path)


def test_png_renamed_pdf(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(_png_bytes())
    with pytest.raises(LoadError, match="not a PDF"):
        _load(path)


def test_unsupported_suffix_is_refused_by_load(tmp_path: Path) -> None:
    path = tmp_path / "report.pptx"
    path.write_bytes(b"PK\x03\x04 not really a pptx")
    with pytest.raises(LoadError, match=r"unsupported file type \.pptx"):
        _load(path)


# --- discover ---


def test_discover_missing_path_gives_a_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "missing.pdf"
    assert list(discover([missing])) == [(missing, "does not exist")]


def test_discover_unsupported_named_explicitly_vs_in_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "report.pptx").write_bytes(b"PK\x03\x04")
    (folder / "notes.txt").write_text("hello", encoding="utf-8")
    (folder / "NOSUFFIX").write_text("hello", encoding="utf-8")

    found = list(discover([folder]))
    assert found == [((folder / "notes.txt").resolve(), None)]

    explicit = dict(discover([folder / "report.pptx", folder / "NOSUFFIX"]))
    reason = explicit[(folder / "report.pptx").resolve()]
    assert reason is not None
    assert reason.startswith("unsupported file type .pptx")
    assert ".pdf" in reason and ".md" in reason and ".txt" in reason
    assert "unsupported file type (none)" in (explicit[(folder / "NOSUFFIX").resolve()] or "")


def test_discover_walks_sorted_skips_hidden_and_dedups(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    for rel in ("b.md", "a.txt", "sub/c.PDF", ".hidden.txt", ".git/config.txt"):
        (folder / rel).write_bytes(b"x")
    found = list(discover([folder, folder / "a.txt", str(folder / "sub" / "c.PDF")]))
    assert found == [
        ((folder / "a.txt").resolve(), None),
        ((folder / "b.md").resolve(), None),
        ((folder / "sub" / "c.PDF").resolve(), None),
    ]


def test_discover_special_file_named_explicitly(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    assert list(discover([fifo])) == [(fifo.resolve(), "not a regular file")]
