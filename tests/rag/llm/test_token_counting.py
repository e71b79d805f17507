"""One token-counting path per backend: the chunker, the backend's text count and the packer's
budget all come from the one tokenizer choice of rag.llm.tokens.load_tokenizer.

Real parts throughout: real documents, the session's embedder, the embedded SmolLM2 tokenizer and
chat template, the Llama 2 SentencePiece model, real ingest and packing. The server backend is
pointed at an address where nothing listens: counting chunk text must not need the server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import ingest
from rag import RAG
from rag.config import Settings
from rag.index.reader import Store
from rag.llm.default_model import DEFAULT_MODEL_NAME, unpacked_dir
from rag.llm.factory import make_backend
from rag.llm.tokens import SentencePieceTokenizer, Tokenizer, load_tokenizer, tokenizer_name
from rag.retrieval.embeddings import Embedder
from tests.conftest import DOCUMENTS, LLAMA2_TOKENIZER, stored_rows

SPEECH = DOCUMENTS / "text" / "state_of_the_union.txt"
needs_llama2 = pytest.mark.skipif(
    not LLAMA2_TOKENIZER.is_file(), reason=f"Llama 2 tokenizer not found at {LLAMA2_TOKENIZER}"
)


def _speech(tmp_path: Path, chars: int = 4000) -> Path:
    doc = tmp_path / "speech.txt"
    doc.write_text(SPEECH.read_text(encoding="utf-8")[:chars], encoding="utf-8")
    return doc


def _stored(index: Path) -> tuple[str, list[tuple[str, int]]]:
    """The manifest's tokenizer and every chunk's (text, tokens) as ingest stored them."""
    with Store.open(index) as store:
        name = store.manifest.tokenizer
    rows = stored_rows(index, "c.text, c.tokens")
    assert len(rows) >= 3
    return name, [(str(t), int(n)) for t, n in rows]


def _served(settings: Settings) -> Settings:
    return settings.model_copy(update={"llm_url": "http://127.0.0.1:9/v1", "llm_model": "llama"})


def test_embedded_default_counts_chunks_and_prompts_with_one_tokenizer(
    tmp_path: Path, settings: Settings, embedder: Embedder
) -> None:
    index = tmp_path / "index"
    ingest([_speech(tmp_path)], index, settings, embedder=embedder)
    name, rows = _stored(index)
    backend = make_backend(settings)
    text_tokens = backend.text_tokens()
    assert text_tokens is load_tokenizer(settings)  # what the chunker asks
    assert name == text_tokens.name == tokenizer_name(settings) == DEFAULT_MODEL_NAME
    assert [n for _, n in rows] == text_tokens.count_many([t for t, _ in rows])
    # Prompts are templated and counted by the same tokenizer object.
    assert backend.tokenizer is text_tokens.hf  # type: ignore[attr-defined]


@needs_llama2
@pytest.mark.parametrize("served", [False, True], ids=["embedded", "server"])
def test_a_tokenizer_setting_counts_chunks_and_backend_text_alike(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer, served: bool
) -> None:
    named = settings.model_copy(update={"tokenizer": str(LLAMA2_TOKENIZER)})
    if served:
        named = _served(named)
    index = tmp_path / "index"
    ingest([_speech(tmp_path)], index, named, embedder=embedder)  # the settings choose
    name, rows = _stored(index)
    text_tokens = make_backend(named).text_tokens()
    assert isinstance(text_tokens, SentencePieceTokenizer)
    assert name == text_tokens.name == str(LLAMA2_TOKENIZER)
    texts = [t for t, _ in rows]
    assert [n for _, n in rows] == text_tokens.count_many(texts)
    assert [n for _, n in rows] == [len(text_tokens.sp.encode(t)) for t in texts]
    assert text_tokens.count_many(texts) != tokenizer.count_many(texts)  # not SmolLM2's


def test_packing_budget_is_the_backend_of_these_settings(
    built_index: tuple[Path, object], settings: Settings, embedder: Embedder
) -> None:
    """Each settings' backend packs to its own window, whatever backends were made since, with
    the chat-template count of the tokenizer that counted the chunks."""
    small = settings.model_copy(update={"context_window": 700, "max_tokens": 100})
    question = "What does the Transformer use instead of recurrence?"
    with RAG.open(built_index[0], small, embedder=embedder) as rag:
        backend = rag.backend
        assert make_backend(settings).context_window != 700  # another backend, another window
        packed = rag.prepare(question, top_k=8)
        assert backend.context_window == 700
        assert packed.budget == 600
        assert packed.prompt_tokens == backend.count_tokens(packed.messages) <= 600
        # What generation starts from, templated by the tokenizer that counted the chunks.
        assert len(backend.encode_messages(packed.messages)) == packed.prompt_tokens
        assert backend.tokenizer is backend.text_tokens().hf is load_tokenizer(settings).hf
        assert len(packed.passages) < 8  # the small window did cut passages


def test_in_process_vllm_counts_prompts_without_starting_an_engine(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-process vLLM backend counts with the model's own tokenizer, loaded offline: no
    vllm.LLM is made (vllm is not even needed) to count a prompt or a chunk."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from rag.llm.vllm_inprocess import VLLMBackend

    def no_engine(self: object) -> None:
        raise AssertionError("counting tokens must not start a vllm.LLM")

    monkeypatch.setattr(VLLMBackend, "_load", no_engine)
    backend = make_backend(settings.model_copy(update={"llm_backend": "vllm"}))
    assert isinstance(backend, VLLMBackend)
    messages = [SystemMessage("Answer briefly."), HumanMessage("What is attention?")]
    embedded = make_backend(settings)
    assert backend.count_tokens(messages) == embedded.count_tokens(messages) > 0
    assert backend.tokenizer is backend.text_tokens().hf
    assert backend.text_tokens() is load_tokenizer(settings)


def test_ingest_on_a_fresh_cache_loads_no_model_weights(
    tmp_path: Path, settings: Settings, embedder: Embedder, tokenizer: Tokenizer
) -> None:
    """Before the embedded model's first use has unpacked it, chunks are counted with its
    tokenizer read from the GGUF file: nothing is unpacked (no weights are loaded)."""
    fresh = settings.model_copy(update={"cache_dir": tmp_path / "cache"})
    index = tmp_path / "index"
    ingest([_speech(tmp_path)], index, fresh, embedder=embedder)
    assert not unpacked_dir(fresh.cache_dir).exists()
    name, rows = _stored(index)
    assert name == DEFAULT_MODEL_NAME
    # The same counts as the unpacked model's tokenizer.
    assert [n for _, n in rows] == tokenizer.count_many([t for t, _ in rows])


@needs_llama2
def test_manifest_records_the_tokenizer_that_counted(
    tmp_path: Path, settings: Settings, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tokenizer passed to ingest is the one recorded; a configured name is recorded as
    written, and load_tokenizer's tokenizer carries that same name."""
    index = tmp_path / "index"
    llama2 = SentencePieceTokenizer(LLAMA2_TOKENIZER)
    ingest([_speech(tmp_path)], index, settings, embedder=embedder, tokenizer=llama2)
    name, rows = _stored(index)
    assert name == str(LLAMA2_TOKENIZER)
    assert [n for _, n in rows] == llama2.count_many([t for t, _ in rows])
    monkeypatch.setenv("HOME", str(LLAMA2_TOKENIZER.parent.parent))
    home = settings.model_copy(update={"tokenizer": "~/llama2/tokenizer.model"})
    assert load_tokenizer(home).name == tokenizer_name(home) == "~/llama2/tokenizer.model"
