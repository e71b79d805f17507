"""Uploads and deletions through a real ``rag serve``: the normal ingest pipeline and writer
lock, readers switching to the new snapshot after the commit, limits refused with nothing
changed, and a client's file name never used as given."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from rag.index.reader import Store
from tests.serve.conftest import Server

ZEBRA = "The zebra protocol assigns seventeen purple widgets to every relay station."
ZEBRA_QUESTION = "How many purple widgets does the zebra protocol assign to a relay station?"


def _state(index: Path) -> tuple[str, int, int]:
    with Store.open(index) as store:
        return (store.snapshot.name, *store.counts())


def _upload(server: Server, files: list[tuple[str, bytes]]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/documents",
        files=[("files", (name, data)) for name, data in files],
        headers=server.headers,
        timeout=300.0,
    )


def _retrieve(server: Server, question: str) -> list[dict[str, object]]:
    r = httpx.post(
        f"{server.url}/v1/retrieve",
        json={"question": question, "k": 1},
        headers=server.headers,
        timeout=120.0,
    )
    assert r.status_code == 200, r.text
    passages: list[dict[str, object]] = r.json()["passages"]
    return passages


def test_an_upload_is_found_by_the_next_question_and_a_delete_removes_it(server: Server) -> None:
    before = _state(server.index)
    r = _upload(server, [("zebra notes.txt", ZEBRA.encode())])
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["files_ingested"] == 1 and report["added"] == 1
    [doc] = report["documents"]
    assert doc["name"] == "zebra notes.txt"
    assert doc["source"] == "zebra notes.txt"  # the upload's name, not a path of the server
    assert _state(server.index)[1:] == (before[1] + 1, before[2] + 1)

    [passage] = _retrieve(server, ZEBRA_QUESTION)
    assert passage["source"] == doc["source"] and passage["text"] == ZEBRA
    answer = httpx.post(
        f"{server.url}/v1/ask",
        json={"question": ZEBRA_QUESTION},
        headers=server.headers,
        timeout=120.0,
    ).json()
    assert answer["citations"][0]["source"] == doc["source"]

    # The same name again, new content: the document is replaced, not duplicated.
    again = _upload(server, [("zebra notes.txt", (ZEBRA + " Nine are spare.").encode())]).json()
    assert again["updated"] == 1 and again["added"] == 0
    assert _state(server.index)[1] == before[1] + 1

    gone = httpx.delete(
        f"{server.url}/v1/documents/zebra notes.txt", headers=server.headers, timeout=120.0
    )
    assert gone.status_code == 200, gone.text
    assert gone.json()["deleted"] == [doc["source"]]
    assert _state(server.index)[1:] == before[1:]
    assert not (server.upload_dir / "zebra notes.txt").exists()
    assert _retrieve(server, ZEBRA_QUESTION)[0]["source"] != doc["source"]
    missing = httpx.delete(
        f"{server.url}/v1/documents/zebra notes.txt", headers=server.headers, timeout=120.0
    )
    assert missing.status_code == 404 and "/v1/index" in missing.json()["error"]["message"]


def test_an_oversized_upload_is_413_and_changes_nothing(server: Server) -> None:
    before = _state(server.index)
    kept = sorted(p.name for p in server.upload_dir.iterdir()) if server.upload_dir.exists() else []
    big = (ZEBRA + "\n").encode() * (1_200_000 // len(ZEBRA))  # over the server's 1 MB
    r = _upload(server, [("big.txt", big)])
    assert r.status_code == 413, r.text
    assert "--max-upload-mb" in r.json()["error"]["message"]
    assert _state(server.index) == before
    now = sorted(p.name for p in server.upload_dir.iterdir()) if server.upload_dir.exists() else []
    assert now == kept


def test_an_upload_sent_in_chunks_over_the_limit_is_413(server: Server) -> None:
    """Without a Content-Length, the body is counted as it arrives."""
    before = _state(server.index)
    boundary = "rag-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()

    def body():  # type: ignore[no-untyped-def]
        yield head
        for _ in range(40):
            yield b"zebra " * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(
        f"{server.url}/v1/documents",
        content=body(),
        headers={**server.headers, "content-type": f"multipart/form-data; boundary={boundary}"},
        timeout=120.0,
    )
    assert r.status_code == 413, r.text
    assert _state(server.index) == before


@pytest.mark.parametrize(
    ("client_name", "kept_as"),
    [
        ("../../escape.txt", "escape.txt"),
        ("/etc/passwd.txt", "passwd.txt"),
        ("..\\..\\windows.md", "windows.md"),
        ("we!rd$name.TXT", "we_rd_name.txt"),
        ("résumé 2024.md", "résumé 2024.md"),
        ("a\u202etxt.md", "a_txt.md"),  # a right-to-left override is not shown as given
    ],
)
def test_a_client_file_name_is_never_a_path(
    server: Server, tmp_path: Path, client_name: str, kept_as: str
) -> None:
    r = _upload(server, [(client_name, f"{ZEBRA} {kept_as}".encode())])
    assert r.status_code == 200, r.text
    [doc] = r.json()["documents"]
    assert doc["name"] == kept_as
    assert doc["source"] == kept_as
    assert (server.upload_dir / kept_as).is_file()
    assert not (server.upload_dir.parent.parent / "escape.txt").exists()
    gone = httpx.delete(f"{server.url}/v1/documents/{kept_as}", headers=server.headers, timeout=60)
    assert gone.status_code == 200


def test_an_unsupported_type_is_415_and_a_file_without_text_422(server: Server) -> None:
    before = _state(server.index)
    r = _upload(server, [("tool.exe", b"MZ\x00\x00")])
    assert r.status_code == 415 and ".pdf" in r.json()["error"]["message"]
    r = _upload(server, [("blank.txt", b"\x00\x01binary")])
    assert r.status_code == 422 and "blank.txt" in r.json()["error"]["message"]
    assert _state(server.index) == before
    assert not (server.upload_dir / "blank.txt").exists()


def _leftovers(server: Server) -> list[str]:
    """Staged bytes, journals and copies of replaced files: none may outlive a request."""
    return sorted(
        p.name
        for p in server.upload_dir.iterdir()
        if p.name.startswith((".incoming-", ".previous-", ".journal-"))
    )


def test_a_long_non_latin_name_is_cut_by_bytes_and_kept(server: Server) -> None:
    client_name = "报告" * 60 + ".txt"  # 120 characters, 364 bytes in UTF-8
    r = _upload(server, [(client_name, ZEBRA.encode())])
    assert r.status_code == 200, r.text
    [doc] = r.json()["documents"]
    assert doc["name"].endswith(".txt") and doc["name"].startswith("报告报告")
    assert len(doc["name"].encode()) <= 240
    assert (server.upload_dir / doc["name"]).read_bytes() == ZEBRA.encode()
    assert _leftovers(server) == []
    gone = httpx.delete(
        f"{server.url}/v1/documents/{doc['name']}", headers=server.headers, timeout=120.0
    )
    assert gone.status_code == 200, gone.text


@pytest.mark.parametrize(
    ("first", "second"), [("a?b.txt", "a!b.txt"), ("Report.TXT", "Report.txt")]
)
def test_two_client_names_kept_under_one_name_do_not_replace_each_other(
    server: Server, first: str, second: str
) -> None:
    r = _upload(server, [(first, ZEBRA.encode())])
    assert r.status_code == 200, r.text
    [doc] = r.json()["documents"]
    assert doc["replaced"] is False
    try:
        before = _state(server.index)
        clash = _upload(server, [(second, b"Another document entirely, about otters.")])
        assert clash.status_code == 409, clash.text
        message = clash.json()["error"]["message"]
        assert repr(first) in message and doc["name"] in message
        assert _state(server.index) == before
        assert (server.upload_dir / doc["name"]).read_bytes() == ZEBRA.encode()
        assert _leftovers(server) == []
        # The same client name again replaces its own document, and says so.
        again = _upload(server, [(first, (ZEBRA + " Nine are spare.").encode())])
        assert again.status_code == 200, again.text
        assert again.json()["documents"][0]["replaced"] is True
        assert _leftovers(server) == []
    finally:
        httpx.delete(
            f"{server.url}/v1/documents/{doc['name']}", headers=server.headers, timeout=120.0
        )
    # Once the document is gone, the name is free for the other client name.
    r = _upload(server, [(second, ZEBRA.encode())])
    assert r.status_code == 200, r.text
    httpx.delete(f"{server.url}/v1/documents/{doc['name']}", headers=server.headers, timeout=120)


def test_a_refused_upload_names_no_server_path_and_leaves_nothing(server: Server) -> None:
    r = _upload(server, [("blank.txt", b"\x00\x01binary"), ("empty.md", b"")])
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "blank.txt" in message and "empty.md" in message
    assert str(server.upload_dir.resolve()) not in message and "/" not in message
    assert _leftovers(server) == []
    assert not (server.upload_dir / "blank.txt").exists()
