"""A generated, cited chat answer through ``rag serve`` in front of a real vLLM server.

It lives beside the other vLLM tests, so that one vLLM session server (``tests/vllm/conftest.py``)
serves them all; without ``.venv-vllm`` this skips, unless RAG_REQUIRE_VLLM=1, which makes it fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import IngestReport
from rag.llm.default_model import DEFAULT_MODEL_NAME
from rag.llm.serve import VLLMServer
from tests.serve.conftest import API_KEY, Server, copy_index, serve_extra  # noqa: F401

pytestmark = pytest.mark.vllm


def test_chat_completion_generated_by_vllm_is_cited(
    serve_extra: None,  # noqa: F811
    built_index: tuple[Path, IngestReport],
    vllm_server: VLLMServer,
    tmp_path: Path,
) -> None:
    from openai import OpenAI

    index = copy_index(built_index[0], tmp_path / "index")
    server = Server(
        index,
        tmp_path,
        args=("--llm-url", vllm_server.base_url, "--llm-model", DEFAULT_MODEL_NAME,
              "--max-tokens", "64"),
    )  # fmt: skip
    try:
        server.wait_ready()
        client = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=300)
        question = "What does the Transformer use instead of recurrence?"
        completion = client.chat.completions.create(
            model="rag:index", messages=[{"role": "user", "content": question}], temperature=0
        )
        content = completion.choices[0].message.content or ""
        citations = (completion.model_extra or {})["citations"]
        assert content and citations, content
        assert Path(citations[0]["source"]).name == "attention_is_all_you_need_neurips2017.pdf"
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        streamed = client.chat.completions.create(
            model="rag:index",
            messages=[{"role": "user", "content": question}],
            temperature=0,
            stream=True,
        )
        chunks = list(streamed)
        assert sum(1 for c in chunks if c.choices[0].delta.content) > 1  # token by token
        assert (chunks[-1].model_extra or {})["citations"]
    finally:
        server.stop()
