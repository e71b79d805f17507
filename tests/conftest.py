"""Session fixtures: real models are loaded once per test run and shared."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import IngestReport, ingest
from rag.config import Settings
from rag.index.reader import Store
from rag.llm.tokens import Tokenizer, load_tokenizer
from rag.retrieval.embeddings import Embedder

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
DOCUMENTS = SHARED_DATA / "documents"
ATTENTION_PDF = DOCUMENTS / "pdf" / "attention_is_all_you_need_neurips2017.pdf"
NO_TEXT_PDF = DOCUMENTS / "pdf" / "hybrid_search_article_print_no_text_layer.pdf"
LLAMA2_TOKENIZER = SHARED_DATA / "tokenizers" / "llama2" / "tokenizer.model"


def stored_rows(index: Path, columns: str) -> list[tuple[object, ...]]:
    """``columns`` (SQL over ``chunks c JOIN documents d``) of every live chunk of the committed
    snapshot, in chunk id order, read from each segment's rows."""
    found: list[tuple[object, ...]] = []
    with Store.open(index) as store:
        for seg in store.segments:
            sql = f"SELECT c.id, c.doc_id, {columns} FROM chunks c JOIN documents d ON d.id = c.doc_id"
            found += [r for r in seg.db.execute(sql) if r[1] not in seg.deleted]
    return [r[2:] for r in sorted(found)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not DOCUMENTS.is_dir():
        skip = pytest.mark.skip(reason=f"shared documents not found at {DOCUMENTS}")
        for item in items:
            if "shared_data" in item.fixturenames:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Defaults only: no rag.toml and no RAG_* variables leak into tests. Answers are generated
    (the default without a served model is extract mode, whose tests ask for it)."""
    return Settings.model_validate({"answer_mode": "generate"})


@pytest.fixture(scope="session")
def embedder(settings: Settings) -> Embedder:
    """The embedder a new index gets by default here (on a CPU: the int8 ONNX model)."""
    return Embedder.from_settings(settings)


@pytest.fixture(scope="session")
def float_embedder(settings: Settings) -> Embedder:
    """The float model: for indexes built before int8 became the CPU default, and as the
    reference that other runtimes of the same weights must equal."""
    return Embedder.from_settings(settings.model_copy(update={"embed_quantize": "none"}))


@pytest.fixture(scope="session")
def tokenizer(settings: Settings) -> Tokenizer:
    return load_tokenizer(settings)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a few real documents: one clean PDF, one markdown file and one text file."""
    root = tmp_path_factory.mktemp("corpus")
    shutil.copy(ATTENTION_PDF, root / ATTENTION_PDF.name)
    shutil.copy(DOCUMENTS / "text" / "llama2c_README.md", root / "llama2c_README.md")
    shutil.copy(DOCUMENTS / "text" / "state_of_the_union.txt", root / "state_of_the_union.txt")
    return root


@pytest.fixture(scope="session")
def built_index(
    tmp_path_factory: pytest.TempPathFactory,
    small_corpus: Path,
    settings: Settings,
    embedder: Embedder,
    tokenizer: Tokenizer,
) -> Iterator[tuple[Path, IngestReport]]:
    """An index of ``small_corpus``, built once per session. Tests must not write to it."""
    index = tmp_path_factory.mktemp("index") / "idx"
    report = ingest([small_corpus], index, settings, embedder=embedder, tokenizer=tokenizer)
    yield index, report
