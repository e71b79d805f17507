"""The embedder without torch: the model directory's files, and ONNX vectors equal to torch's."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.retrieval import onnx_encoder
from rag.retrieval.embeddings import Embedder, resolve_embedder
from rag.retrieval.encoder_spec import read_spec

DEFAULT_MODEL = Path(resolve_embedder("default"))


def _real_texts(shared_data: Path) -> list[str]:
    """SciFact abstracts and questions, and paragraphs of a speech: long, short and odd text."""
    scifact = shared_data / "scifact" / "derived_beir_style"
    with gzip.open(scifact / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        abstracts = [json.loads(next(f))["text"] for _ in range(24)]
    with (scifact / "queries.jsonl").open(encoding="utf-8") as f:
        questions = [json.loads(next(f))["text"] for _ in range(16)]
    speech = (shared_data / "documents" / "text" / "state_of_the_union.txt").read_text("utf-8")
    paragraphs = [p.strip() for p in speech.split("\n\n") if p.strip()][:16]
    return abstracts + questions + paragraphs


def test_the_default_model_is_described_by_its_files() -> None:
    spec = read_spec(str(DEFAULT_MODEL))
    assert spec is not None
    assert (spec.max_seq_length, spec.pooling, spec.dimension) == (256, "mean", 384)
    assert spec.normalize and not spec.do_lower_case
    tok = spec.tokenizer()
    # tokenizer.json was saved padding and cutting at 128; sentence-transformers reads 256.
    long = tok.encode("word " * 600)
    assert len(long.ids) == 256
    assert tok.encode_batch(["short", "a longer text here"])[0].attention_mask[-1] == 0
    assert len(spec.tokenizer(for_model=False).encode("word " * 600).ids) == 602


def test_shapes_other_than_transformer_pooling_normalize_stay_on_torch(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, model, ignore=shutil.ignore_patterns("*.safetensors"))
    modules = json.loads((model / "modules.json").read_text())
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (model / "modules.json").write_text(json.dumps([*modules, dense]))
    assert read_spec(str(model)) is None
    (model / "modules.json").write_text(json.dumps(modules))
    pooling = model / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
    pooling.write_text(json.dumps(config))
    assert read_spec(str(model)) is None
    config.update(pooling_mode_max_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    spec = read_spec(str(model))
    assert spec is not None and spec.pooling == "cls"
    # No limit configured: the tokenizer's, capped by the transformer's positions (512).
    (model / "sentence_bert_config.json").write_text("{}")
    assert read_spec(str(model)).max_seq_length == 512  # type: ignore[union-attr]
    assert read_spec("nobody/no-such-model") is None  # never downloaded


def test_onnx_only_vectors_equal_sentence_transformers(
    float_embedder: Embedder, shared_data: Path
) -> None:
    """A new embedder on the cached ONNX file never loads the sentence-transformers model, and its
    vectors of real texts equal the torch model's to 1e-5, so an index built either way answers
    the same."""
    embedder = float_embedder
    texts = _real_texts(shared_data)
    embedder.embed(["make sure the ONNX file exists"])
    fresh = Embedder(embedder.name, cache_dir=embedder.cache_dir)
    vectors = fresh.embed(texts, batch_size=8)
    assert fresh.active_runtime == "onnx"
    assert "model" not in fresh.__dict__, "the ONNX-only path loaded sentence-transformers"
    reference = embedder.model.encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    assert vectors.shape == (len(texts), 384) == (len(texts), fresh.dimension)
    assert float(np.abs(vectors - reference).max()) < 1e-5
    # Token counts (the chunker's embedder limit) agree with the transformers tokenizer's too.
    hf = embedder.model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert fresh.count_tokens(texts) == [len(ids) for ids in hf]
    assert fresh.max_tokens == embedder.model.max_seq_length - 2 == 254
    assert "model" not in fresh.__dict__


def test_an_export_that_disagrees_with_the_model_is_not_published(
    embedder: Embedder, tmp_path: Path
) -> None:
    spec = read_spec(str(DEFAULT_MODEL))
    assert spec is not None
    wrong = dataclasses.replace(spec, pooling="cls")
    target = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match="differ"):
        onnx_encoder.export(embedder.model, wrong, target)
    assert list(tmp_path.iterdir()) == []
