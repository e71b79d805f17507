"""A follow-up sent to the real service in extract mode is read with the earlier question, as
``rag chat`` reads it (issue 20, item 3): the service builds a Chat from the messages."""

from __future__ import annotations

import httpx

from tests.serve.conftest import Server

QUESTION = "What does the Transformer use instead of recurrence?"


def test_an_extract_follow_up_is_answered_from_the_conversation(server: Server) -> None:
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "It relies entirely on an attention mechanism. [1]"},
        {"role": "user", "content": "How many heads does it use?"},
    ]
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": f"rag:{server.index.name}", "messages": messages},
        headers=server.headers,
        timeout=120.0,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert not body["abstained"], body
    assert "h = 8 parallel attention layers, or heads" in body["choices"][0]["message"]["content"]
