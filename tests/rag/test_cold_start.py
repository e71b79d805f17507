"""Cold start: a process that only queries imports no torch, transformers or sentence-transformers,
and loads no language model unless one writes the answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest import ingest
from rag.config import Settings
from rag.engine import RAG
from rag.llm.tokens import Tokenizer
from rag.retrieval.embeddings import Embedder

QUESTIONS = (
    "What did the president say about inflation?",
    "How will the country help Ukraine?",
    "Which infrastructure will be rebuilt?",
)
UNANSWERABLE = "What is the capital of Peru?"

# Run in a new process: open the index, retrieve, and ask a question that abstains in both answer
# modes; report what was imported and loaded.
PROBE = r"""
import json, sys
from pathlib import Path
from rag import RAG, Settings

index, cache, questions, unanswerable = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
settings = Settings.model_validate({"cache_dir": cache})
with RAG.open(index, settings) as rag:
    found = {mode: [[[c.chunk_id, c.score] for c in rag.retrieve(q, retrieval_mode=mode)]
                    for q in questions] for mode in ("dense", "hybrid")}
    retrieved = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
    # A threshold no passage reaches: the answer abstains before any model is needed.
    answers = [rag.ask(unanswerable, answer_mode=m, abstain_below=0.99) for m in ("generate", "extract")]
    runtime = rag.embedder.active_runtime
embedded = sys.modules.get("rag.llm.embedded")
print(json.dumps({
    "found": found,
    "imported_by_retrieve": retrieved,
    "imported": sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules),
    "runtime": runtime,
    "abstained": [a.abstained for a in answers],
    "completion_tokens": [a.usage.completion_tokens for a in answers],
    "models_loaded": len(embedded.EmbeddedBackend._models) if embedded else 0,
    "unpacked": (cache / "models").exists(),
}))
"""


@pytest.fixture(scope="module")
def torch_built_index(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, tokenizer: Tokenizer
) -> tuple[Path, Path, Embedder]:
    """A real document indexed by the torch embedder, in a cache of its own where the normal
    path has exported the ONNX file (the first use of the embedder on a CPU)."""
    root = tmp_path_factory.mktemp("cold")
    cache = root / "cache"
    settings = Settings.model_validate({"cache_dir": cache})
    torch_embedder = Embedder(runtime="torch", cache_dir=cache)
    speech = shared_data / "documents" / "text" / "state_of_the_union.txt"
    index = root / "index"
    ingest([speech], index, settings, embedder=torch_embedder, tokenizer=tokenizer, workers=0)
    onnx = Embedder.from_settings(settings)
    onnx.embed(["the first query exports the ONNX file"])
    assert onnx.active_runtime == "onnx"
    return index, cache, torch_embedder


@pytest.fixture(scope="module")
def probe(torch_built_index: tuple[Path, Path, Embedder]) -> dict[str, Any]:
    index, cache, _ = torch_built_index
    args = [str(index), str(cache), json.dumps(QUESTIONS), UNANSWERABLE]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_querying_imports_no_torch_once_the_onnx_file_exists(probe: dict[str, Any]) -> None:
    assert probe["runtime"] == "onnx"
    assert probe["imported_by_retrieve"] == []
    assert probe["imported"] == [], "an abstaining answer imported a model library"


def test_an_abstention_loads_no_language_model(probe: dict[str, Any]) -> None:
    assert probe["abstained"] == [True, True]
    assert probe["completion_tokens"] == [0, 0]
    assert probe["models_loaded"] == 0
    # Not even unpacked from its package: the cache holds the embedder's ONNX file only.
    assert not probe["unpacked"]


def test_an_index_built_with_torch_answers_alike_without_it(
    torch_built_index: tuple[Path, Path, Embedder], probe: dict[str, Any]
) -> None:
    index, cache, torch_embedder = torch_built_index
    settings = Settings.model_validate({"cache_dir": cache})
    with RAG.open(index, settings, embedder=torch_embedder) as rag:
        for mode in ("dense", "hybrid"):
            for question, onnx_hits in zip(QUESTIONS, probe["found"][mode], strict=True):
                torch_hits = [
                    (c.chunk_id, c.score) for c in rag.retrieve(question, retrieval_mode=mode)
                ]
                assert [i for i, _ in onnx_hits] == [i for i, _ in torch_hits], (mode, question)
                for (_, a), (_, b) in zip(onnx_hits, torch_hits, strict=True):
                    assert a == pytest.approx(b, abs=1e-4)
