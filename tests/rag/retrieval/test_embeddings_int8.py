"""The int8 ONNX embedder: close to the float one, never mixed with it in one index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.cli import main
from rag.config import DEFAULT_EMBEDDER, Settings
from rag.engine import RAG
from rag.errors import ConfigError, IndexMismatch
from rag.index.manifest import check_compatible
from rag.index.reader import Store
from rag.retrieval.embeddings import Embedder, cuda_available, resolve_quantize

STATE_OF_THE_UNION = Path("text") / "state_of_the_union.txt"


pytestmark = pytest.mark.usefixtures("no_outside_settings")


@pytest.fixture(scope="module")
def int8_embedder(settings: Settings) -> Embedder:
    return Embedder.from_settings(settings.model_copy(update={"embed_quantize": "int8"}))


def _paragraphs(documents: Path, n: int) -> list[str]:
    text = (documents / STATE_OF_THE_UNION).read_text(encoding="utf-8")
    paras = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 80]
    assert len(paras) >= n
    return paras[:n]


def test_settings_choose_and_validate_the_quantization() -> None:
    assert Settings.model_validate({}).embed_quantize == "auto"
    assert Settings.load(embed_quantize="int8").embed_quantize == "int8"
    with pytest.raises(ConfigError, match="embed_quantize"):
        Settings.load(embed_quantize="int4")
    with pytest.raises(ConfigError, match="CPU only"):
        Settings.load(embed_quantize="int8", embed_device="cuda")
    with pytest.raises(ConfigError, match="ONNX Runtime"):
        Settings.load(embed_quantize="int8", embed_runtime="torch")
    with pytest.raises(ConfigError, match="CPU only"):  # the suffix means the same
        Settings.load(embedder=f"{DEFAULT_EMBEDDER}#int8", embed_device="cuda")
    with pytest.raises(ConfigError, match="int8"):
        Embedder(quantize="int4")


def test_the_int8_model_has_a_name_of_its_own(int8_embedder: Embedder) -> None:
    assert int8_embedder.name == f"{DEFAULT_EMBEDDER}#int8"
    # Aliases, and the suffix given in the embedder setting, name the same model.
    assert Embedder("all-MiniLM-L6-v2#int8").name == int8_embedder.name
    assert Embedder("default", quantize="int8").name == int8_embedder.name
    assert Embedder("default").name == DEFAULT_EMBEDDER


def test_int8_vectors_are_close_to_float_but_not_equal(
    shared_data: Path, float_embedder: Embedder, int8_embedder: Embedder
) -> None:
    texts = [
        *_paragraphs(shared_data / "documents", 24),
        "The Transformer relies entirely on self-attention to compute representations.",
        "混合检索结合了BM25和语义搜索。",
    ]
    exact = float_embedder.embed(texts)
    quantized = int8_embedder.embed(texts, batch_size=4)
    assert int8_embedder.active_runtime == "onnx"
    assert int8_embedder._encoder.path.name.startswith("model-int8")
    assert quantized.dtype == np.float32 and quantized.shape == exact.shape
    assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    cos = (exact * quantized).sum(axis=1)
    assert cos.min() > 0.99, cos
    # The recipe's margin: quantizing the feed-forward down-projections too gave a mean of
    # 0.9934 (min 0.9878) on these texts, and -0.009 SciFact hybrid nDCG@10; this one 0.9967.
    assert cos.mean() > 0.995, cos
    assert not np.allclose(exact, quantized, atol=1e-4)  # really another model
    assert cos.mean() < 0.9999
    # Activations are quantized per run: a text's vector must not depend on the texts batched
    # with it, or a question alone would not be embedded as its passage was.
    alone = int8_embedder.embed([texts[3]])[0]
    assert np.allclose(alone, quantized[3], atol=1e-5)
    assert np.allclose(int8_embedder.embed(texts[::-1], batch_size=32)[::-1], quantized, atol=1e-5)


def test_rag_ingest_int8_end_to_end_and_float_queries_are_refused(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    float_embedder: Embedder,
    int8_embedder: Embedder,
) -> None:
    source = tmp_path / "docs" / "state_of_the_union.txt"
    source.parent.mkdir()
    shutil.copy(shared_data / "documents" / STATE_OF_THE_UNION, source)
    index = tmp_path / "index"
    monkeypatch.setenv("RAG_EMBED_QUANTIZE", "int8")

    code = main(["ingest", str(source), "--index", str(index), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["files_ingested"] == 1 and report["chunks_total"] > 5

    with Store.open(index) as store:
        assert store.manifest.embedder == f"{DEFAULT_EMBEDDER}#int8"
        rows = [r for seg in store.segments for r in seg.db.execute("SELECT id, text FROM chunks")]
        ids, texts = [r[0] for r in rows], [r[1] for r in rows]
        stored = store.vectors(ids)
    assert len(ids) == report["chunks_total"]
    assert np.allclose(stored, int8_embedder.embed(texts), atol=1e-5)
    assert not np.allclose(stored, float_embedder.embed(texts), atol=1e-4)

    # A float query embedder is refused, with the name that would work.
    with pytest.raises(IndexMismatch, match="#int8") as refused:
        check_compatible(store.manifest, embedder=float_embedder.name, index_dir=index)
    assert f"--embedder {DEFAULT_EMBEDDER}#int8" in str(refused.value)
    # Settings with int8 (here from RAG_EMBED_QUANTIZE) open it and query with int8 vectors.
    with RAG.open(index, Settings.model_validate({})) as rag:
        assert rag.embedder.name == f"{DEFAULT_EMBEDDER}#int8"
    monkeypatch.delenv("RAG_EMBED_QUANTIZE")
    # The default ("auto") follows the index's manifest; float, asked for, is refused.
    with RAG.open(index, Settings.model_validate({})) as rag:
        assert rag.embedder.name == f"{DEFAULT_EMBEDDER}#int8"
    float_settings = Settings.model_validate({"embed_quantize": "none"})
    with pytest.raises(IndexMismatch, match="#int8"):
        RAG.open(index, float_settings)
    with pytest.raises(IndexMismatch, match="#int8"):
        RAG.open(index, float_settings, embedder=float_embedder)
    code = main(["info", "--index", str(index), "--json"])
    assert code == 0 and json.loads(capsys.readouterr()[0])["embedder"].endswith("#int8")

    # The name the message gives opens it, and int8 questions find their passage.
    by_suffix = Settings.model_validate({"embedder": f"{DEFAULT_EMBEDDER}#int8"})
    with RAG.open(index, by_suffix) as rag:
        assert rag.embedder.name == f"{DEFAULT_EMBEDDER}#int8"
        top = rag.retrieve("What did the president say about Ketanji Brown Jackson?", k=3)
    assert any("Ketanji" in c.text for c in top)


def test_auto_quantization_decides_by_index_model_and_device() -> None:
    auto = Settings.model_validate({})
    if cuda_available():
        pytest.skip("a CUDA GPU is visible: a new index is embedded in float on it")
    # A new index: int8 for the packaged model on the CPU under ONNX, else float.
    assert resolve_quantize(auto) == "int8"
    assert resolve_quantize(auto.model_copy(update={"embed_runtime": "torch"})) == "none"
    assert resolve_quantize(auto.model_copy(update={"embed_device": "cuda"})) == "none"
    assert resolve_quantize(auto.model_copy(update={"device": "cuda:0"})) == "none"
    assert resolve_quantize(auto.model_copy(update={"embedder": "BAAI/bge-small-en-v1.5"})) == (
        "none"
    )
    # An existing index: its manifest decides, also against the CPU default.
    assert resolve_quantize(auto, DEFAULT_EMBEDDER) == "none"
    assert resolve_quantize(auto, f"{DEFAULT_EMBEDDER}#int8") == "int8"
    on_gpu = auto.model_copy(update={"embed_device": "cuda"})
    assert resolve_quantize(on_gpu, f"{DEFAULT_EMBEDDER}#int8") == "int8"
    # An index of another model decides nothing (opening it reports the mismatch).
    assert resolve_quantize(auto, "BAAI/bge-small-en-v1.5") == "int8"
    # Asked for explicitly, the setting wins over the manifest.
    explicit = auto.model_copy(update={"embed_quantize": "none"})
    assert resolve_quantize(explicit, f"{DEFAULT_EMBEDDER}#int8") == "none"


def test_a_float_index_stays_float_under_the_default(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    float_embedder: Embedder,
) -> None:
    """An index built in float (by an older version, or on a GPU) keeps being written and
    queried in float by the default settings: nothing built before int8 became the CPU default
    is refused."""
    docs = tmp_path / "docs"
    docs.mkdir()
    paragraphs = _paragraphs(shared_data / "documents", 12)
    (docs / "first.txt").write_text("\n\n".join(paragraphs[:6]), encoding="utf-8")
    index = tmp_path / "index"
    monkeypatch.setenv("RAG_EMBED_QUANTIZE", "none")
    code = main(["ingest", str(docs), "--index", str(index)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    monkeypatch.delenv("RAG_EMBED_QUANTIZE")

    (docs / "second.txt").write_text("\n\n".join(paragraphs[6:]), encoding="utf-8")
    code = main(["ingest", str(docs), "--index", str(index), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["files_ingested"] == 1
    with RAG.open(index, Settings.model_validate({})) as rag:
        assert rag.manifest.embedder == DEFAULT_EMBEDDER
        assert rag.embedder.name == DEFAULT_EMBEDDER
        rows = [
            r for seg in rag.store.segments for r in seg.db.execute("SELECT id, text FROM chunks")
        ]
        stored = rag.store.vectors([r[0] for r in rows])
        top = rag.retrieve(paragraphs[7][:200], k=3)
        assert any(paragraphs[7][:60] in c.text and c.source.endswith("second.txt") for c in top)
    assert np.allclose(stored, float_embedder.embed([r[1] for r in rows]), atol=1e-5)
