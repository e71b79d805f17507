"""What a client may override is the server's decision (rag.serve.permissions)."""

from __future__ import annotations

import httpx
import pytest

from rag.serve.errors import ApiError
from rag.serve.permissions import DEFAULT_GROUPS, OVERRIDE_GROUPS, parse_groups, permitted
from rag.serve.schemas import ChatCompletionRequest, Overrides
from tests.serve.conftest import Server

QUESTION = "What does the Transformer use instead of recurrence?"


def test_every_override_a_request_can_carry_belongs_to_a_group() -> None:
    grouped = frozenset().union(*OVERRIDE_GROUPS.values())
    assert set(Overrides.model_fields) <= grouped
    chat = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "q"}], "temperature": 0.2, "top_p": 0.9,
         "max_tokens": 9, "seed": 1}
    )  # fmt: skip
    assert set(chat.overrides()) <= grouped


def test_answer_mode_is_refused_by_default_and_named_with_the_flag() -> None:
    with pytest.raises(ApiError) as refused:
        permitted({"answer_mode": "generate", "top_k": 3}, DEFAULT_GROUPS, 256)
    assert refused.value.status == 403
    assert "answer_mode" in refused.value.message
    assert "--allow-overrides answer_mode,retrieval,sampling" in refused.value.message
    everything = parse_groups("all")
    assert permitted({"answer_mode": "generate"}, everything, 256) == {"answer_mode": "generate"}
    with pytest.raises(ApiError):
        permitted({"top_k": 3}, parse_groups("none"), 256)


def test_max_tokens_is_lowered_to_the_servers_bound() -> None:
    assert permitted({"max_tokens": 100_000}, DEFAULT_GROUPS, 256) == {"max_tokens": 256}
    assert permitted({"max_tokens": 64}, DEFAULT_GROUPS, 256) == {"max_tokens": 64}


@pytest.mark.parametrize("spec", ["retrieval,bogus", "", "all,none"])
def test_unknown_groups_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="retrieval, sampling, answer_mode"):
        parse_groups(spec)


def test_a_client_cannot_switch_an_extract_server_to_generation(server: Server) -> None:
    r = httpx.post(
        f"{server.url}/v1/ask",
        json={"question": QUESTION, "overrides": {"answer_mode": "generate"}},
        headers=server.headers,
        timeout=120.0,
    )
    assert r.status_code == 403, r.text
    assert "--allow-overrides" in r.json()["error"]["message"]
    ok = httpx.post(
        f"{server.url}/v1/ask",
        json={"question": QUESTION, "overrides": {"top_k": 2, "max_tokens": 10_000}},
        headers=server.headers,
        timeout=120.0,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["mode"] == "extract"
