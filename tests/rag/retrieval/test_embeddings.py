from __future__ import annotations

import subprocess
import sys

import numpy as np

from rag.retrieval.embeddings import Embedder


def test_onnx_runtime_matches_torch(float_embedder: Embedder) -> None:
    embedder = float_embedder
    texts = [
        "short",
        "The Transformer relies entirely on self-attention to compute representations.",
        "word " * 400,  # longer than the embedder reads: truncated the same way by both
        "混合检索结合了BM25和语义搜索。",
    ]
    assert embedder.active_runtime == "onnx"
    fast = embedder.embed(texts, batch_size=2)
    reference = embedder.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    cos = (fast * reference).sum(axis=1)
    assert fast.shape == (4, embedder.dimension)
    assert np.all(cos > 0.9999), cos
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)


def test_importing_rag_stays_light() -> None:
    code = (
        "import sys, rag; from rag import Settings; "
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss', "
        "'langchain_core') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_onnx_threads_do_not_spin_after_a_run(embedder: Embedder) -> None:
    """ONNX Runtime's worker threads spin on a core after each run by default; on a 2-core
    machine that doubled the question embedding (13 vs 7 ms) and the search after it (12 vs
    4.6 ms), so the session is made with spinning off. Checked through the live session's
    options, since CPU time stolen by a spinning thread is not something a test can time."""
    from rag.retrieval.onnx_encoder import SPINNING

    assert embedder.active_runtime == "onnx"
    options = embedder._encoder.session.get_session_options()
    assert options.get_session_config_entry(SPINNING) == "0"
