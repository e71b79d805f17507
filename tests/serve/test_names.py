"""The names the service gives documents (rag.serve.names): never a server path."""

from __future__ import annotations

from rag.serve.names import SourceNames

UPLOADS = "/srv/rag/uploads/3f2a"
SOURCES = [
    "/home/ana/papers/attention.pdf",
    "/home/ana/papers/2023/llama2.pdf",
    f"{UPLOADS}/notes.md",
]


def test_uploads_by_name_and_ingested_files_below_their_shared_folder() -> None:
    names = SourceNames(UPLOADS, SOURCES)
    assert [names.public(s) for s in SOURCES] == ["attention.pdf", "2023/llama2.pdf", "notes.md"]


def test_every_source_and_also_in_of_a_response_is_rewritten() -> None:
    names = SourceNames(UPLOADS, SOURCES)
    body = {
        "answer": "It uses attention [1].",
        "citations": [{"n": 1, "source": SOURCES[0], "also_in": [SOURCES[1]], "page": 2}],
        "passages": [{"source": SOURCES[2], "text": "/home/ana is not a key"}],
    }
    assert names.rewrite(body) == {
        "answer": "It uses attention [1].",
        "citations": [
            {"n": 1, "source": "attention.pdf", "also_in": ["2023/llama2.pdf"], "page": 2}
        ],
        "passages": [{"source": "notes.md", "text": "/home/ana is not a key"}],
    }


def test_a_public_name_resolves_back_to_its_source() -> None:
    names = SourceNames(UPLOADS, SOURCES)
    assert names.resolve("2023/llama2.pdf", SOURCES) == SOURCES[1]
    assert names.resolve("notes.md", SOURCES) == SOURCES[2]
    assert names.resolve(SOURCES[0], SOURCES) == SOURCES[0]  # the stored source still works
    assert names.resolve("missing.pdf", SOURCES) is None


def test_one_ingested_file_is_named_by_its_file_name() -> None:
    names = SourceNames(UPLOADS, ["/data/only.pdf"])
    assert names.public("/data/only.pdf") == "only.pdf"
