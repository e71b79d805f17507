"""``rag serve`` killed with SIGKILL during an upload leaves the index verifiable and unchanged,
and answers questions from the committed snapshot while the upload is being written.

The kill is not timed: the server is started with RAG_PAUSE_AT (:mod:`rag.index.crashpoints`),
so its ingest freezes at a named point of the write and announces it in a marker file; the test
then kills the server's process group there.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from ingest import IngestReport
from rag.cli import main
from rag.index.reader import Store
from tests.serve.conftest import API_KEY, Server, copy_index

POINTS = (
    "ingest-file-stored",  # the upload's chunks written into the new segment
    "pointer-temp-synced",  # everything written and synced, just before CURRENT is replaced
)


def _state(index: Path) -> tuple[str, int, int, frozenset[str]]:
    with Store.open(index) as store:
        return (
            store.snapshot.name,
            *store.counts(),
            frozenset(d.source for d in store.documents()),
        )


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_an_upload_leaves_the_index_as_it_was(
    serve_extra: None,
    built_index: tuple[Path, IngestReport],
    tmp_path: Path,
    point: str,
) -> None:
    index = copy_index(built_index[0], tmp_path / "index")
    before = _state(index)
    marker = tmp_path / "paused"
    # One server without a key: on loopback every route then answers without one.
    server = Server(
        index,
        tmp_path,
        api_key=API_KEY if point == POINTS[-1] else None,
        env={"RAG_PAUSE_AT": point, "RAG_PAUSE_FILE": str(marker)},
    )
    failures: list[BaseException] = []

    def upload() -> None:
        try:
            httpx.post(
                f"{server.url}/v1/documents",
                files=[("files", ("zebra.txt", b"The zebra protocol has seventeen widgets."))],
                headers=server.headers,
                timeout=600.0,
            )
        except httpx.TransportError as exc:  # the server dies under the request
            failures.append(exc)

    try:
        server.wait_ready()
        sender = threading.Thread(target=upload, daemon=True)
        sender.start()
        deadline = time.monotonic() + 300.0
        while not marker.exists():
            assert time.monotonic() < deadline, f"never paused at {point}:\n{server.log()}"
            assert sender.is_alive(), f"the upload ended before {point}:\n{server.log()}"
            time.sleep(0.05)  # polling the marker; the limit is the deadline above
        # Frozen mid-write, holding the writer lock: questions are still answered, from the
        # snapshot committed before the upload.
        r = httpx.post(
            f"{server.url}/v1/retrieve",
            json={"question": "How many widgets does the zebra protocol have?", "k": 3},
            headers=server.headers,
            timeout=120.0,
        )
        assert r.status_code == 200, r.text
        assert {p["source"] for p in r.json()["passages"]} <= {Path(s).name for s in before[3]}
        server.kill()
        sender.join(timeout=120.0)
    finally:
        server.stop()
    assert failures, "the upload was answered although the server was killed"
    assert main(["index", "verify", "--index", str(index)]) == 0
    assert _state(index) == before


def _indexed_sha(index: Path, source: str) -> str | None:
    with Store.open(index) as store:
        return next((d.sha256 for d in store.documents() if d.source == source), None)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("point", "committed"),
    [
        ("ingest-file-stored#2", False),  # the second upload's first file stored, not committed
        ("pointer-synced#2", True),  # the second upload committed, its clean-up not done
    ],
)
def test_after_a_killed_upload_and_a_restart_the_upload_directory_agrees_with_the_index(
    serve_extra: None,
    built_index: tuple[Path, IngestReport],
    tmp_path: Path,
    point: str,
    committed: bool,
) -> None:
    import hashlib

    from tests.conftest import ATTENTION_PDF

    index = copy_index(built_index[0], tmp_path / "index")
    marker = tmp_path / "paused"
    v1, v2 = b"# Same\n\nThe first version has seven owls.", b"# Same\n\nThe second has nine owls."
    server = Server(
        index, tmp_path, api_key=None, env={"RAG_PAUSE_AT": point, "RAG_PAUSE_FILE": str(marker)}
    )
    try:
        server.wait_ready()
        first = httpx.post(
            f"{server.url}/v1/documents",
            files=[("files", ("same.md", v1))],
            headers=server.headers,
            timeout=600.0,
        )
        assert first.status_code == 200, first.text
        source = str(server.upload_dir.resolve() / first.json()["documents"][0]["source"])

        def replace() -> None:
            pdf = ATTENTION_PDF.read_bytes()
            with contextlib.suppress(httpx.TransportError):  # the server dies under it
                httpx.post(
                    f"{server.url}/v1/documents",
                    files=[("files", ("same.md", v2)), ("files", ("paper.pdf", pdf))],
                    headers=server.headers,
                    timeout=600.0,
                )

        sender = threading.Thread(target=replace, daemon=True)
        sender.start()
        deadline = time.monotonic() + 300.0
        while not marker.exists():
            assert time.monotonic() < deadline, f"never paused at {point}:\n{server.log()}"
            time.sleep(0.05)  # polling the marker; the limit is the deadline above
        server.kill()
        sender.join(timeout=120.0)
    finally:
        server.stop()
    restarted = Server(index, tmp_path, api_key=None)
    try:
        restarted.wait_ready()
    finally:
        restarted.stop()
    kept = restarted.upload_dir / "same.md"
    expected = v2 if committed else v1
    assert kept.read_bytes() == expected
    assert _indexed_sha(index, source) == hashlib.sha256(expected).hexdigest()
    pdf_source = str(restarted.upload_dir.resolve() / "paper.pdf")
    assert (restarted.upload_dir / "paper.pdf").exists() is committed
    assert (_indexed_sha(index, pdf_source) is not None) is committed
    assert sorted(p.name for p in restarted.upload_dir.iterdir() if p.name.startswith(".")) == [
        ".names.json"
    ]
