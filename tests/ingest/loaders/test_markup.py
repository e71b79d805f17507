"""HTML and DOCX loading, on files written by the tests (no office suite is available here)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ingest.loaders import LoadError, load
from ingest.loaders.markup import docx_to_text, html_to_text

HTML = """<!doctype html><html><head><title>Release notes</title>
<style>body { color: red }</style><script>var x = "not text";</script></head>
<body><nav>Home | Docs</nav>
<h1>Version 2.0</h1><p>The index now supports <b>hybrid</b>
   retrieval.</p>
<h2>Breaking changes</h2><ul><li>Schema version 2.</li><li>Python 3.11 or newer.</li></ul>
<pre>rag ingest docs
  --index idx</pre>
<table><tr><td>mode</td><td>nDCG@10</td></tr><tr><td>hybrid</td><td>0.734</td></tr></table>
<p>Caf&eacute; &amp; more</p></body></html>"""

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def make_docx(path: Path, title: str = "Quarterly report") -> Path:
    body = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="{W}"><w:body>
<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Quarterly report</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Revenue</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">Revenue grew </w:t></w:r><w:r><w:t>12% to 4.2 million.</w:t></w:r></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Region</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Growth</w:t></w:r></w:p></w:tc></w:tr>
<w:tr><w:tc><w:p><w:r><w:t>EMEA</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>15%</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Outlook</w:t></w:r></w:p>
<w:p><w:r><w:t>Flat.</w:t></w:r><w:r><w:br/><w:t>Next line.</w:t></w:r></w:p>
</w:body></w:document>"""
    core = f"""<?xml version="1.0" encoding="UTF-8"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties"
 xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></cp:coreProperties>"""
    types = """<?xml version="1.0" encoding="UTF-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/word/document.xml"
 ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>
</Types>"""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", types)
        z.writestr("word/document.xml", body)
        z.writestr("docProps/core.xml", core)
    return path


def test_html_text_headings_and_title(tmp_path: Path) -> None:
    text, headings, title = html_to_text(HTML)
    assert title == "Release notes"
    assert "not text" not in text and "color: red" not in text
    assert "The index now supports hybrid retrieval." in text
    assert "Café & more" in text
    assert "rag ingest docs\n  --index idx" in text  # <pre> keeps its layout
    assert [h for _, h in headings] == ["Version 2.0", "Breaking changes"]
    for offset, heading in headings:
        assert text[offset : offset + len(heading)] == heading
    path = tmp_path / "notes.html"
    path.write_text(HTML, encoding="utf-8")
    loaded = load(path, path.read_bytes())
    assert loaded.kind == "html" and loaded.title == "Release notes"
    assert loaded.pages[0].headings == headings


def test_docx_paragraphs_tables_headings(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "report.docx")
    text, headings, title = docx_to_text(path.read_bytes())
    assert title == "Quarterly report"
    assert "Revenue grew 12% to 4.2 million." in text
    assert "Region | Growth" in text and "EMEA | 15%" in text
    assert "Flat.\nNext line." in text
    assert [h for _, h in headings] == ["Quarterly report", "Revenue", "Outlook"]
    for offset, heading in headings:
        assert text[offset : offset + len(heading)] == heading
    loaded = load(path, path.read_bytes())
    assert loaded.kind == "docx" and loaded.pages[0].number is None


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("broken.docx", b"PK\x03\x04 not really a zip", "not a DOCX file or corrupt"),
        ("empty.html", b"<html><body><script>x()</script></body></html>", "no text"),
    ],
)
def test_bad_markup_is_skipped_with_a_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(LoadError, match=reason):
        load(path, data)


def test_docx_sections_reach_the_chunks(tmp_path: Path) -> None:
    from ingest.chunking import Chunker, ChunkLimits

    path = make_docx(tmp_path / "report.docx")
    page = load(path, path.read_bytes()).pages[0]

    def count(texts: object) -> list[int]:
        return [len(t.split()) for t in texts]  # type: ignore[attr-defined]

    chunks = Chunker(ChunkLimits(8, 0, 8), count, count).split(page)
    by_text = {c.text: c.section for c in chunks}
    assert any(sec == "Outlook" for t, sec in by_text.items() if "Flat." in t)
    for c in chunks:
        assert page.text[c.start : c.end] == c.text


def _zip_bomb_docx(path: Path, inflated: int = 200 * 1024 * 1024) -> Path:
    """A valid DOCX whose docProps/core.xml inflates to ``inflated`` bytes (about 200 KB packed)."""
    make_docx(path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist() if n != "docProps/core.xml"}
    block = b"\0" * (1024 * 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
        with z.open("docProps/core.xml", "w") as fh:  # streamed: the bomb is never in memory
            for _ in range(inflated // len(block)):
                fh.write(block)
    return path


def _lie_about_size(path: Path, member: str, size: int) -> None:
    """Rewrite the central directory so that ``member`` claims to inflate to ``size`` bytes."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_len = int.from_bytes(data[at + 28 : at + 30], "little")
        if data[at + 46 : at + 46 + name_len] == name:
            data[at + 24 : at + 28] = size.to_bytes(4, "little")
        at = data.find(b"PK\x01\x02", at + 46)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("lying_header", [False, True])
def test_docx_with_zip_bomb_metadata_is_skipped_in_small_memory(
    tmp_path: Path, lying_header: bool
) -> None:
    import tracemalloc

    path = _zip_bomb_docx(tmp_path / "bomb.docx")
    assert path.stat().st_size < 2 * 1024 * 1024
    if lying_header:
        # Headers can lie: the cap must hold while inflating, not only on the declared size.
        _lie_about_size(path, "docProps/core.xml", 1000)
    data = path.read_bytes()
    tracemalloc.start()
    try:
        with pytest.raises(LoadError, match=r"docProps/core\.xml|corrupt DOCX"):
            load(path, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"peak {peak:,} bytes while reading a 200 MB part"


def test_docx_with_oversized_metadata_names_the_part(tmp_path: Path) -> None:
    path = _zip_bomb_docx(tmp_path / "bomb.docx", inflated=8 * 1024 * 1024)
    with pytest.raises(LoadError, match=r"docProps/core\.xml inflates to more than .* refused"):
        load(path, path.read_bytes())


def test_docx_archive_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ZipFile opened on the DOCX is closed when loading returns or fails (a spy on the real
    ZipFile records the instances)."""
    opened: list[zipfile.ZipFile] = []

    class Recording(zipfile.ZipFile):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            opened.append(self)

    good = make_docx(tmp_path / "report.docx")
    bad = _zip_bomb_docx(tmp_path / "bomb.docx", inflated=8 * 1024 * 1024)
    monkeypatch.setattr("ingest.loaders.markup.zipfile.ZipFile", Recording)
    assert docx_to_text(good.read_bytes())[2] == "Quarterly report"
    assert len(opened) == 1 and opened[0].fp is None  # ZipFile.close() drops its file object
    with pytest.raises(LoadError):
        load(bad, bad.read_bytes())
    assert len(opened) == 2
    assert all(z.fp is None for z in opened)
