"""The HTTP API against a real ``rag serve`` (uvicorn on a loopback port), spoken to by the
official ``openai`` client and by plain HTTP. Answers are extractive (no model server is
configured), which cites passages without a language model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from rag.index.reader import Store
from tests.serve.conftest import ALLOWED_ORIGIN, API_KEY, Server

QUESTION = "What does the Transformer use instead of recurrence?"
ATTENTION_PDF = "attention_is_all_you_need_neurips2017.pdf"


def _post(server: Server, path: str, payload: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=payload, headers=server.headers, timeout=120.0)


def _openai(server: Server):  # type: ignore[no-untyped-def]
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, timeout=120.0, max_retries=0)


def _model(server: Server) -> str:
    return f"rag:{server.index.name}"


def test_healthz_answers_without_a_key(server: Server) -> None:
    r = httpx.get(f"{server.url}/healthz", timeout=30.0)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


# The routes that answer without the key: the health check and the page's own files.
OPEN_ROUTES = {"/healthz", "/", "/favicon.ico", "/page/{name}"}


def _every_route() -> list[tuple[str, str]]:
    """(method, path) of every route of the app, read from the app itself, so that a route
    added without the key check fails the test below."""
    try:
        from fastapi.routing import APIRoute
        from starlette.routing import Route

        from rag.config import Settings
        from rag.serve.app import create_app
        from rag.serve.config import ServeConfig
    except ImportError:  # no serve extra: the tests skip or fail through the server fixture
        return [("GET", "/v1/models")]
    config = ServeConfig(Path("index"), Settings.model_validate({}), api_key="k" * 16,
                         upload_dir=Path("unused"))  # fmt: skip
    app = create_app(config, index=None)  # type: ignore[arg-type]  # routes are not called
    while not hasattr(app, "routes"):
        app = app.app  # type: ignore[attr-defined]  # the middlewares around FastAPI
    found = []
    routes = list(app.routes)  # type: ignore[attr-defined]
    while routes:
        route = routes.pop(0)
        inner = getattr(route, "original_router", None)  # an included router (FastAPI 0.12x+)
        if inner is not None:
            routes += inner.routes
        elif isinstance(route, APIRoute | Route) and route.path not in OPEN_ROUTES:
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, route.path.replace("{source:path}", "a.md")))
    return found


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": API_KEY}],
    ids=["missing", "wrong", "not-bearer"],
)
@pytest.mark.parametrize(("method", "path"), _every_route())
def test_a_missing_or_wrong_key_is_401(
    server: Server, headers: dict[str, str], method: str, path: str
) -> None:
    r = httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30.0)
    assert r.status_code == 401
    assert "RAG_API_KEY" in r.json()["error"]["message"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_openai_client_with_a_wrong_key_gets_401(server: Server) -> None:
    from openai import AuthenticationError, OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="wrong-key-0123456789", max_retries=0)
    with pytest.raises(AuthenticationError):
        client.chat.completions.create(
            model=_model(server), messages=[{"role": "user", "content": QUESTION}]
        )


def test_models_lists_the_one_served_name(server: Server) -> None:
    assert [m.id for m in _openai(server).models.list()] == [_model(server)]


def test_chat_completion_is_cited(server: Server) -> None:
    completion = _openai(server).chat.completions.create(
        model=_model(server), messages=[{"role": "user", "content": QUESTION}]
    )
    content = completion.choices[0].message.content or ""
    citations = (completion.model_extra or {})["citations"]
    assert citations, content
    assert {f"[{c['n']}]" for c in citations} <= {w for w in content.split() if w.startswith("[")}
    first = citations[0]
    assert Path(first["source"]).name == ATTENTION_PDF
    assert first["page"] >= 1 and first["text"]
    assert completion.choices[0].finish_reason == "stop"


def test_streamed_chat_completion_ends_with_the_citations(server: Server) -> None:
    stream = _openai(server).chat.completions.create(
        model=_model(server),
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text and "[" in text
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    citations = (last.model_extra or {})["citations"]
    assert citations and Path(citations[0]["source"]).name == ATTENTION_PDF
    assert all("citations" not in (c.model_extra or {}) for c in chunks[:-1])


def test_chat_takes_the_conversation_as_rag_chat_does(server: Server) -> None:
    """An earlier instruction is kept (acknowledged when it is the last message), and a
    follow-up is answered with the earlier turn in view."""
    client = _openai(server)
    ack = client.chat.completions.create(
        model=_model(server),
        messages=[{"role": "user", "content": "From now on, answer in one sentence."}],
    )
    assert "answer in one sentence" in (ack.choices[0].message.content or "")
    assert (ack.model_extra or {})["citations"] == []
    turns = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "It relies entirely on attention. [1]"},
    ]
    follow_up = {"role": "user", "content": "and its encoder?"}
    alone = client.chat.completions.create(model=_model(server), messages=[follow_up])
    after = client.chat.completions.create(model=_model(server), messages=[*turns, follow_up])
    # Retrieval searched for the follow-up joined with the earlier question (as Chat does in
    # extract mode), so the answer differs from that to the follow-up alone.
    assert (after.model_extra or {})["citations"]
    assert after.choices[0].message.content != alone.choices[0].message.content


def test_an_unknown_model_name_is_404(server: Server) -> None:
    from openai import NotFoundError

    with pytest.raises(NotFoundError, match="GET /v1/models"):
        _openai(server).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": QUESTION}]
        )


def test_ask_returns_what_rag_ask_json_prints(server: Server) -> None:
    overrides = {"top_k": 3, "extract_top_k": 3}  # extract mode reads the larger of the two
    r = _post(server, "/v1/ask", {"question": QUESTION, "overrides": overrides})
    assert r.status_code == 200, r.text
    data = r.json()
    assert {"answer", "citations", "passages", "abstained", "model", "usage", "mode"} <= set(data)
    assert data["mode"] == "extract" and len(data["passages"]) == 3
    cited = data["citations"]
    assert cited and {"n", "source", "page", "text", "score"} <= set(cited[0])


def test_retrieve_with_filters_and_overrides(server: Server) -> None:
    r = _post(
        server,
        "/v1/retrieve",
        {
            "question": QUESTION,
            "k": 4,
            "filters": {"kinds": ["pdf"], "pages": [2, 3]},
            "retrieval_mode": "lexical",
        },
    )
    assert r.status_code == 200, r.text
    passages = r.json()["passages"]
    assert len(passages) == 4
    assert all(p["source"].endswith(".pdf") and 2 <= p["page"] <= 3 for p in passages)
    assert [p["n"] for p in passages] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("payload", "status", "says"),
    [
        ({"question": QUESTION, "retrieval_mode": "psychic"}, 422, "retrieval_mode"),
        ({"question": QUESTION, "unknown": 1}, 422, "unknown"),
        ({"question": QUESTION, "filters": {"pages": [0, 2]}}, 422, "greater than or equal to 1"),
        ({"question": QUESTION, "mmr_lambda": False}, 422, "JSON number"),
        ({"question": QUESTION, "k": "3"}, 422, "JSON integer"),
        ({"question": " \u3000\t"}, 422, "question"),
        ({"question": "x" * 501}, 413, "--max-question-chars"),
    ],
    ids=[
        "bad-mode",
        "unknown-field",
        "page-zero",
        "false-number",
        "string-integer",
        "blank",
        "long-question",
    ],
)
def test_bad_requests_are_4xx_that_say_why(
    server: Server, payload: dict[str, object], status: int, says: str
) -> None:
    r = _post(server, "/v1/retrieve", payload)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]


def test_pages_in_either_order_are_one_range(server: Server) -> None:
    passages = [
        _post(server, "/v1/retrieve", {"question": QUESTION, "filters": {"pages": p}}).json()
        for p in ([2, 3], [3, 2])
    ]
    assert passages[0]["passages"] and passages[0] == passages[1]
    assert {p["page"] for p in passages[0]["passages"]} <= {2, 3}


def test_a_wrong_method_is_405_with_allow(server: Server) -> None:
    r = httpx.get(f"{server.url}/v1/ask", headers=server.headers, timeout=30.0)
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_the_schema_documents_errors_security_and_the_upload_body(server: Server) -> None:
    schema = httpx.get(f"{server.url}/openapi.json", headers=server.headers, timeout=30.0).json()
    assert schema["security"] == [{"bearer": []}]
    assert schema["paths"]["/healthz"]["get"]["security"] == []
    upload = schema["paths"]["/v1/documents"]["post"]
    assert set(upload["responses"]) >= {"200", "400", "401", "403", "409", "413", "415", "422"}
    files = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert files["files"]["items"]["format"] == "binary"
    error = schema["paths"]["/v1/ask"]["post"]["responses"]["422"]["content"]["application/json"]
    assert error["schema"] == {"$ref": "#/components/schemas/ErrorBody"}


def test_a_body_over_the_limit_is_413(server: Server) -> None:
    r = _post(server, "/v1/ask", {"question": "x", "history": [["q" * 600_000, "a" * 600_000]]})
    assert r.status_code == 413
    assert "--max-body-mb" in r.json()["error"]["message"]


def test_index_says_what_rag_info_json_says(server: Server) -> None:
    r = httpx.get(f"{server.url}/v1/index", headers=server.headers, timeout=30.0)
    data = r.json()
    with Store.open(server.index) as store:
        docs, chunks = store.counts()
        sources = {Path(d.source).name for d in store.documents() if "uploads" not in d.source}
    assert (data["documents"], data["chunks"]) == (docs, chunks)
    # Named below the ingested folder (here every file sits in it), never by a server path.
    listed = {s["source"] for s in data["sources"]}
    assert sources <= listed and not any(s.startswith("/") for s in listed)
    assert data["index"] == server.index.name
    assert {"embedder", "dimension", "segments", "snapshot", "schema_version"} <= set(data)


def test_json_errors_in_openai_shape(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b"{not json",
        headers={**server.headers, "content-type": "application/json"},
        timeout=30.0,
    )
    assert r.status_code == 422
    error = json.loads(r.text)["error"]
    assert set(error) == {"message", "type", "code", "request_id"}
    assert error["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("origin", [ALLOWED_ORIGIN, "http://elsewhere.example"])
def test_cors_allows_only_the_configured_origins(server: Server, origin: str) -> None:
    preflight = httpx.options(
        f"{server.url}/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=30.0,
    )
    allowed = preflight.headers.get("access-control-allow-origin")
    assert allowed == (origin if origin == ALLOWED_ORIGIN else None)
    r = httpx.get(f"{server.url}/v1/models", headers={**server.headers, "Origin": origin})
    assert r.headers.get("access-control-allow-origin") == allowed


def test_cors_is_off_unless_configured(tmp_path: Path) -> None:
    from rag.config import Settings
    from rag.serve.app import create_app
    from rag.serve.config import ServeConfig
    from rag.serve.guards import Guard

    config = ServeConfig(tmp_path, Settings.model_validate({}), upload_dir=tmp_path / "up")
    app = create_app(config, index=None)  # type: ignore[arg-type]  # routes are not called
    assert isinstance(app, Guard)  # no CORS middleware around it
