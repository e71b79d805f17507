"""Parsing in worker processes: the index and report of a parse in one thread, a parse that hangs
killed at ``file_timeout`` while the run goes on, no process left behind by a failed or killed
ingest, and peak memory that does not grow with the corpus.

Everything is real: real files, pypdf, the session's tokenizer and embedder, worker processes
forked from multiprocessing's fork server, and `rag ingest` subprocesses killed with SIGKILL.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pypdf import PdfReader, PdfWriter

from ingest import FileProgress, IngestReport, ingest
from ingest.loaders import timeout_reason
from ingest.loaders.pdf import _has_fonts
from ingest.token_counters import TokenCounter, portable_counter
from rag.config import Settings
from rag.index.crashpoints import PAUSE_AT, PAUSE_FILE
from rag.llm.tokens import SentencePieceTokenizer, Tokenizer
from rag.retrieval.embeddings import Embedder
from tests.conftest import ATTENTION_PDF, DOCUMENTS, LLAMA2_TOKENIZER, SHARED_DATA, stored_rows
from tests.ingest.test_pipeline import _head, _pdf_bytes

_DEADLINE_S = 300  # for an event a test waits on; generous, never reached when healthy
_ROWS = (
    "d.source, d.sha256, d.kind, d.size, d.pages, d.title, c.seq, c.page, c.page_label, "
    "c.section, c.start, c.end, c.tokens, c.text, c.heading"
)


def hanging_pdf() -> bytes:
    """A valid one-page PDF of 1.3 KB on which pypdf 7's text extraction runs for about an hour,
    in pure Python, within every one of its resource limits.

    The page draws a form XObject 5,000 times (pypdf's cap on form invocations per page) and the
    form holds 100,000 ``q Q`` operator pairs (under its parse budget of 2 million per stream),
    which pypdf parses again at each invocation: 0.65 s each, measured here, so 5,000 of them
    take 54 minutes. Nothing here is a test hook: this is a real file that hangs a real parser.
    """
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    fonts = b"/Font << /F1 4 0 R >>"
    form = b"BT /F1 1 Tf () Tj ET\n" + b"q Q\n" * 100_000
    page = b"BT /F1 12 Tf 72 720 Td (Hang) Tj ET\n" + b"/X0 Do\n" * 5_000

    def stream(data: bytes, keys: bytes = b"") -> bytes:
        packed = zlib.compress(data, 9)
        head = b"<< " + keys + b"/Length %d /Filter /FlateDecode >>\nstream\n" % len(packed)
        return head + packed + b"\nendstream"

    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 6 0 R "
        b"/Resources << " + fonts + b" /XObject << /X0 5 0 R >> >> >>",
        font,
        stream(
            form,
            b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << " + fonts + b" >> ",
        ),
        stream(page),
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _write(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _text(name: str, chars: int = 900) -> bytes:
    return _head(DOCUMENTS / "text" / name, chars).encode()


def _report(r: IngestReport) -> dict[str, object]:
    return r.model_dump(exclude={"seconds", "index"})


def _workers_of(pid: int) -> list[psutil.Process]:
    """The worker processes of the ingest running in process ``pid``: the children of its fork
    server, the only grandchildren it has."""
    try:
        return [
            p for p in psutil.Process(pid).children(recursive=True) if p.ppid() != pid
        ]  # fmt: skip
    except psutil.NoSuchProcess:
        return []


def _wait_for(what: str, found: object) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not found():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def _parsing(pid: int) -> psutil.Process | None:
    """A worker of ``pid`` that has spent a second of CPU: it is inside the hanging PDF (a
    worker's setup takes a tenth of that, and the other files a few milliseconds)."""
    for p in _workers_of(pid):
        try:
            if p.cpu_times().user > 1.0:
                return p
        except psutil.NoSuchProcess:
            pass
    return None


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slow PDF first, so that results come back out of order, then texts, a duplicate and a
    file that is skipped."""
    writer = PdfWriter()
    for page in PdfReader(ATTENTION_PDF).pages[:3]:
        writer.add_page(page)
    notes = _text("state_of_the_union.txt")
    return _write(
        tmp_path_factory.mktemp("mixed") / "docs",
        {
            "a_paper.pdf": _pdf_bytes(writer),
            "b_guide.md": _text("llama2c_README.md"),
            "c_notes.txt": notes,
            "d_copy_of_notes.txt": notes,
            "e_empty.txt": b"",
            "f_essay.txt": _text("paul_graham_essay.txt", 1500),
        },
    )


def test_workers_write_the_index_and_report_of_a_thread(
    tmp_path: Path, mixed: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    runs: dict[int, tuple[dict[str, object], list[tuple[object, ...]], int]] = {}
    for workers in (0, 2):
        index = tmp_path / f"index-{workers}"
        calls = embedder.calls
        report = ingest(
            [mixed], index, settings, embedder=embedder, tokenizer=tokenizer, workers=workers
        )
        # Rows in chunk id order: committed in the order of the files, the ids are equal too.
        runs[workers] = (_report(report), stored_rows(index, _ROWS), embedder.calls - calls)
    assert runs[2] == runs[0]
    assert report.added == 5  # the run with workers
    assert [s.path for s in report.files_skipped] == [str(mixed / "e_empty.txt")]
    sources = {str(p) for p in mixed.iterdir()} - {str(mixed / "e_empty.txt")}
    assert {r[0] for r in runs[2][1]} == sources


def test_token_counters_sent_to_workers_count_as_the_tokenizers(
    tokenizer: Tokenizer, embedder: Embedder
) -> None:
    sotu = (DOCUMENTS / "text" / "state_of_the_union.txt").read_text(encoding="utf-8")
    texts = [
        sotu[:3000],  # longer than the embedder's 128-token truncation in its tokenizer.json
        "",
        " ",
        "[CLS] a [SEP] [PAD] <|im_start|>user<|im_end|> <s></s> <|endoftext|>",
        "信息网络 2023年 营业收入 同比增长",
        "naïve café — “quotes” ﬁ ligature \u00a0nbsp \x00 nul 🙂",
        "a\r\nb\tc\n\n\nd",
    ]
    for counter, count in (
        (portable_counter(tokenizer), tokenizer.count_many),
        (portable_counter(embedder.model.tokenizer), embedder.count_tokens),
    ):
        assert isinstance(counter, TokenCounter)
        sent = pickle.loads(pickle.dumps(counter))
        assert sent(texts) == count(texts)
        assert sent([]) == []
    llama = SentencePieceTokenizer(LLAMA2_TOKENIZER)
    sent = pickle.loads(pickle.dumps(portable_counter(llama)))
    assert sent(texts) == llama.count_many(texts)


def test_a_parse_that_hangs_is_killed_at_file_timeout_and_the_run_goes_on(
    tmp_path: Path, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    pdf = hanging_pdf()
    page = PdfReader(io.BytesIO(pdf)).pages[0]
    assert _has_fonts(page)  # a readable page with a font: its text extraction is what hangs
    docs = _write(
        tmp_path / "docs",
        {"a_hang.pdf": pdf, "b_guide.md": _text("llama2c_README.md"), "c.txt": _text("state_of_the_union.txt")},
    )  # fmt: skip
    # Long enough for the text files on a slow machine; the PDF would take about an hour.
    limited = Settings.model_validate({"file_timeout": 10})
    started = time.monotonic()
    # One worker: the files after the PDF need the replacement of the worker that was killed.
    report = ingest(
        [docs], tmp_path / "index", limited, embedder=embedder, tokenizer=tokenizer, workers=1
    )
    elapsed = time.monotonic() - started
    [skipped] = report.files_skipped
    assert skipped.path == str(docs / "a_hang.pdf")
    assert skipped.reason == f"{timeout_reason(10)}; its parser process was killed"
    assert report.added == 2
    assert elapsed < 900, elapsed  # not the hour that pypdf would take


def test_a_worker_that_dies_costs_its_file_only(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    """A worker killed from outside (as by the kernel's OOM killer) while it parses: its file is
    skipped with the signal named, a new worker parses the rest."""
    docs = _write(
        tmp_path / "docs",
        {"a_hang.pdf": hanging_pdf(), "b_guide.md": _text("llama2c_README.md")},
    )
    killed: list[int] = []

    def kill_the_busy_worker() -> None:
        _wait_for("a worker inside the PDF", lambda: _parsing(os.getpid()))
        worker = _parsing(os.getpid())
        assert worker is not None
        killed.append(worker.pid)
        worker.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_the_busy_worker, daemon=True)
    killer.start()
    report = ingest(
        [docs], tmp_path / "index", settings, embedder=embedder, tokenizer=tokenizer, workers=1
    )
    killer.join()
    assert killed
    assert [(s.path, s.reason) for s in report.files_skipped] == [
        (str(docs / "a_hang.pdf"), "the parser crashed (SIGKILL)")
    ]
    assert report.added == 1


class _Stop(Exception):
    pass


def test_a_failed_ingest_leaves_no_worker_and_no_thread(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    """The progress callback fails at the first file (skipped: empty) while the second worker is
    inside the hanging PDF: the failure goes up, and the workers and the pool's thread are gone."""
    docs = _write(
        tmp_path / "docs",
        {"a_empty.txt": b"", "b_hang.pdf": hanging_pdf(), "c.txt": _text("state_of_the_union.txt")},
    )
    workers: list[psutil.Process] = []

    def stop(p: FileProgress) -> None:
        workers.extend(_workers_of(os.getpid()))
        raise _Stop

    with pytest.raises(_Stop):
        ingest(
            [docs], tmp_path / "index", settings, embedder=embedder, tokenizer=tokenizer,
            progress=stop, workers=2,
        )  # fmt: skip
    assert len(workers) == 2
    _gone, alive = psutil.wait_procs(workers, timeout=_DEADLINE_S)
    assert alive == []
    assert _workers_of(os.getpid()) == []
    assert not [t for t in threading.enumerate() if "(_produce)" in t.name]


def test_a_run_with_nothing_to_parse_starts_no_worker(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    docs = _write(tmp_path / "docs", {"a.txt": _text("state_of_the_union.txt"), "b.md": b"# Tea\n"})
    index = tmp_path / "index"
    ingest([docs], index, settings, embedder=embedder, tokenizer=tokenizer, workers=2)
    seen: list[int] = []

    def count(p: FileProgress) -> None:
        seen.append(len(_workers_of(os.getpid())))

    again = ingest(
        [docs], index, settings, embedder=embedder, tokenizer=tokenizer, workers=2, progress=count
    )
    assert again.unchanged == 2
    assert seen == [0, 0]


def _env(**extra: str) -> dict[str, str]:
    # Defaults only, as in the session fixtures: no other RAG_* variable reaches the child.
    return {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | extra


def test_killing_rag_ingest_kills_its_workers(tmp_path: Path) -> None:
    """`rag ingest` paused at a crash point while a worker is inside the hanging PDF, then sent
    SIGKILL as in the crash tests: the worker, the fork server and the resource tracker go too."""
    docs = _write(
        tmp_path / "docs", {"a.txt": _text("state_of_the_union.txt"), "b.pdf": hanging_pdf()}
    )
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "ingest", str(docs), "--index", str(tmp_path / "index"),
         "--workers", "2"],
        env=_env(**{PAUSE_AT: "ingest-file-loaded", PAUSE_FILE: str(marker)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for("the pause", lambda: marker.exists() or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        _wait_for("a worker inside the PDF", lambda: _parsing(proc.pid))
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 3  # fork server, resource tracker, workers
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=_DEADLINE_S) == -signal.SIGKILL
        _gone, alive = psutil.wait_procs(family, timeout=_DEADLINE_S)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- peak memory against the size of the corpus --

# Run in a fresh process per corpus. The vector cache that lets identical chunk texts be embedded
# once is cut to 1 MB (600 vectors), so that these corpora outgrow it as a large one outgrows the
# default 64 MB; tiny chunks make many vectors cheaply. The models are loaded before tracemalloc
# starts, so that it sees what the pipeline allocates in Python (NumPy arrays included).
_MEMORY_SCRIPT = """
import json, resource, sys, tracemalloc
from pathlib import Path
import ingest.pipeline as pipeline
from rag.config import Settings
from rag.llm.tokens import load_tokenizer
from rag.retrieval.embeddings import Embedder
pipeline._DEDUP_BYTES = 2**20
settings = Settings.model_validate({"chunk_tokens": 16, "chunk_overlap": 2})
tokenizer, embedder = load_tokenizer(settings), Embedder.from_settings(settings)
embedder.embed(["loaded"])
tracemalloc.start()
report = pipeline.ingest(
    [Path(sys.argv[1])], Path(sys.argv[2]), settings, embedder=embedder, tokenizer=tokenizer
)
traced = tracemalloc.get_traced_memory()[1]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"chunks": report.chunks_added, "traced": traced, "peak": peak}))
"""


def _scifact(n: int) -> Iterator[str]:
    corpus = SHARED_DATA / "scifact" / "derived_beir_style" / "corpus.jsonl.gz"
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        for line, _ in zip(f, range(n), strict=False):
            doc = json.loads(line)
            yield f"{doc.get('title', '')}\n\n{doc['text']}\n"


def _measure(tmp_path: Path, name: str, texts: list[str]) -> dict[str, int]:
    docs = tmp_path / name
    docs.mkdir()
    for i, text in enumerate(texts):
        (docs / f"{i:05d}.txt").write_text(text, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(docs), str(tmp_path / f"{name}-index")],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    measured: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return measured


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_corpus(tmp_path: Path) -> None:
    """1x and 4x a corpus of distinct texts (SciFact abstracts as text files; about 2,900 and
    11,400 chunks), each ingested by a fresh process with the default worker processes.

    Measured here: Python's peak allocations during the ingest were 9.6 MB for both, and the peak
    RSS 752 and 770 MB. The pipeline before the worker pool, which kept every distinct chunk
    text's vector for the whole run, went from 7.1 to 21.6 MB of Python allocations on the same
    corpora (1.7 KB per chunk: 1.5 GB for a million chunks).
    """
    texts = list(_scifact(400))
    small = _measure(tmp_path, "1x", texts[:100])
    large = _measure(tmp_path, "4x", texts)
    assert large["chunks"] > 3.5 * small["chunks"]
    mb = 2**20
    assert large["traced"] < small["traced"] + 2 * mb, (small, large)
    # The whole process, models included: no growth beyond noise (the index writer maps the new
    # segment's vectors when it commits, a few MB here).
    assert large["peak"] < 1.3 * small["peak"] + 50 * mb, (small, large)
