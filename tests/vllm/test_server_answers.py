"""Asking through a real vLLM server (the session server of conftest.py): the production path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestReport
from rag import RAG, Answer
from rag.cli import main
from rag.config import Settings
from rag.errors import ConfigError, LLMUnavailable, PromptTooLong
from rag.llm.default_model import DEFAULT_MODEL_NAME
from rag.llm.llama2_format import render
from rag.llm.openai_server import OpenAIServerBackend, check_server
from rag.llm.server_chat import ServerChatModel
from rag.retrieval.embeddings import Embedder

pytestmark = pytest.mark.vllm

QUESTION = "What does the Transformer use instead of recurrence?"
ATTENTION_PDF = "attention_is_all_you_need_neurips2017.pdf"


def open_rag(index: Path, settings: Settings, embedder: Embedder, **changes: object) -> RAG:
    return RAG.open(index, settings.model_copy(update=changes), embedder=embedder)


@pytest.fixture(scope="module")
def rag(
    built_index: tuple[Path, IngestReport], server_settings: Settings, embedder: Embedder
) -> Iterator[RAG]:
    with open_rag(built_index[0], server_settings, embedder) as r:
        yield r


def test_check_reports_the_served_model(server_settings: Settings) -> None:
    report = check_server(server_settings)
    assert [(m.id, m.max_model_len) for m in report.models] == [(DEFAULT_MODEL_NAME, 4096)]
    assert report.tokenizer_ok, report.tokenizer_detail


def test_cli_check(vllm_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["llm", "check", "--llm-url", vllm_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models"][0]["id"] == DEFAULT_MODEL_NAME
    assert data["models"][0]["max_model_len"] == 4096
    assert data["tokenizer"]["ok"] is True


def test_ask_cites_the_attention_paper(rag: RAG) -> None:
    answer = rag.ask(QUESTION, max_tokens=64)
    assert answer.model == DEFAULT_MODEL_NAME
    assert answer.answer and not answer.abstained
    assert answer.citations, answer.answer
    assert Path(answer.citations[0].source).name == ATTENTION_PDF
    assert 0 < answer.usage.completion_tokens <= 64
    # The server counted the prompt exactly as the packer did with its /tokenize.
    assert answer.usage.prompt_tokens == rag.prepare(QUESTION, max_tokens=64).prompt_tokens


def test_stream_yields_tokens_then_the_answer(rag: RAG) -> None:
    stream = rag.stream(QUESTION, max_tokens=32)
    pieces = list(stream)
    assert len(pieces) > 3  # token by token, not one block
    assert stream.answer is not None
    assert stream.answer.answer.strip() == "".join(pieces).strip()
    assert stream.answer.model == DEFAULT_MODEL_NAME
    assert 0 < stream.answer.usage.completion_tokens <= 32
    assert stream.answer.usage.prompt_tokens == rag.prepare(QUESTION).prompt_tokens


def test_chat_follow_up_keeps_the_history(rag: RAG) -> None:
    chat = rag.chat(max_tokens=48)
    first = chat.send(QUESTION)
    assert first.answer
    follow_up = "How many layers does its encoder have?"
    packed = chat.prepare(follow_up)
    assert packed.history_turns == 1
    second = chat.send(follow_up)
    assert second.answer and second.model == DEFAULT_MODEL_NAME
    assert second.usage.prompt_tokens == packed.prompt_tokens
    assert len(chat.history) == 2


def test_ask_many_in_order_and_one_failure_loses_nothing(rag: RAG) -> None:
    too_long = "Explain this. " + "word " * 5000  # the question alone exceeds the window
    questions = [
        QUESTION,
        "What is the State of the Union address about?",
        too_long,
        "How do I run llama2.c?",
    ]
    results = rag.ask_many(questions, concurrency=4, max_tokens=32)
    assert len(results) == 4
    assert isinstance(results[2], PromptTooLong)
    answers = [r for r in results if isinstance(r, Answer)]
    assert [a.question for a in answers] == [questions[0], questions[1], questions[3]]
    assert all(a.answer and a.model == DEFAULT_MODEL_NAME for a in answers)
    assert all(0 < a.usage.completion_tokens <= 32 for a in answers)


def test_aask_many(rag: RAG) -> None:
    questions = [QUESTION, "How do I run llama2.c?", "Who gave the State of the Union address?"]
    results = asyncio.run(rag.aask_many(questions, concurrency=3, max_tokens=24))
    assert [r.question for r in results if isinstance(r, Answer)] == questions


def test_ask_many_against_a_dead_server_says_so_at_once(
    built_index: tuple[Path, IngestReport], embedder: Embedder, server_settings: Settings
) -> None:
    """No server at all: one clear error up front rather than one per question."""
    from rag.llm.serve import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    with (
        open_rag(built_index[0], server_settings, embedder, llm_url=dead, llm_max_retries=0) as r,
        pytest.raises(LLMUnavailable, match=dead),
    ):
        r.ask_many([QUESTION, "How do I run llama2.c?"], concurrency=2)


def test_token_budget_follows_the_servers_context_length(
    rag: RAG, built_index: tuple[Path, IngestReport], embedder: Embedder, server_settings: Settings
) -> None:
    assert rag.backend.context_window == 4096  # read from /v1/models (--max-model-len)
    with (
        open_rag(built_index[0], server_settings, embedder, context_window=8192) as r,
        pytest.raises(ConfigError, match="4096"),
    ):
        r.ask(QUESTION)
    with pytest.raises(PromptTooLong):
        rag.ask(QUESTION, max_tokens=4096)
    # A small window: passages are dropped until the exact count fits, and the server agrees.
    with open_rag(built_index[0], server_settings, embedder, context_window=700, top_k=8) as r:
        answer = r.ask(QUESTION, max_tokens=64)
    assert len(answer.passages) < 8
    assert answer.usage.prompt_tokens + 64 <= 700


def test_a_request_over_the_real_window_is_refused_by_the_server(
    rag: RAG, server_settings: Settings
) -> None:
    """Why the budget matters: vLLM rejects a prompt longer than its context length."""
    from langchain_core.messages import HumanMessage

    model = rag.backend.chat_model(server_settings)
    assert isinstance(model, ServerChatModel)
    with pytest.raises(LLMUnavailable, match="HTTP 400"):
        model.invoke([HumanMessage("word " * 5000)])


def test_completions_api_templates_once(
    built_index: tuple[Path, IngestReport], embedder: Embedder, server_settings: Settings
) -> None:
    """llm_api='completions': the Llama 2-chat prompt is rendered here and sent as it is."""
    with open_rag(built_index[0], server_settings, embedder, llm_api="completions") as r:
        packed = r.prepare(QUESTION, max_tokens=48)
        backend: OpenAIServerBackend = r.backend
        text = render(packed.messages)
        assert text.startswith("<s>[INST] <<SYS>>\n") and text.count("[INST]") == 1
        plain = backend.tokenize({"prompt": text, "add_special_tokens": False})["count"]
        assert packed.prompt_tokens == plain
        answer = r.ask(QUESTION, max_tokens=48)
        # The server counted the very tokens of the rendered text: it added no chat template.
        assert answer.usage.prompt_tokens == plain
        # (SmolLM2 is no Llama 2 model: what it answers to this format is not checked.)
        assert answer.model == DEFAULT_MODEL_NAME and answer.usage.completion_tokens >= 1
        stream = r.stream(QUESTION, max_tokens=16)
        list(stream)
        assert stream.answer is not None
        assert stream.answer.usage.prompt_tokens == plain
    # The chat path counts the same messages through the model's own chat template instead.
    with open_rag(built_index[0], server_settings, embedder) as r:
        assert r.prepare(QUESTION, max_tokens=48).prompt_tokens != plain


def test_cli_ask_json_with_the_served_model(
    built_index: tuple[Path, IngestReport], vllm_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's done-when command, run in-process."""
    code = main(
        ["ask", QUESTION, "--index", str(built_index[0]), "--llm-url", vllm_url,
         "--llm-model", DEFAULT_MODEL_NAME, "--json", "--max-tokens", "64"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    data = json.loads(out)
    assert data["model"] == DEFAULT_MODEL_NAME
    assert data["citations"] and data["answer"]
    assert data["usage"]["prompt_tokens"] > 0


def test_unknown_model_name_is_refused_with_the_served_names(
    rag: RAG, built_index: tuple[Path, IngestReport], embedder: Embedder, server_settings: Settings
) -> None:
    with (
        open_rag(built_index[0], server_settings, embedder, llm_model="llama-2-7b-chat") as r,
        pytest.raises(LLMUnavailable, match=DEFAULT_MODEL_NAME),
    ):
        r.ask(QUESTION)
