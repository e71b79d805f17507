"""Where the embedder runs: embed_device = auto | cpu | cuda."""

from __future__ import annotations

import numpy as np
import pytest

from rag.config import Settings
from rag.errors import ConfigError
from rag.retrieval.embeddings import CUDA_BATCH_SIZE, Embedder, cuda_available

HAS_CUDA = cuda_available()
TEXTS = [
    "The Transformer relies entirely on self-attention to compute representations.",
    "Aspirin lowers the risk of a first heart attack but raises the risk of bleeding.",
    "short",
    "word " * 400,  # longer than the embedder reads
    "混合检索结合了BM25和语义搜索。",
]


pytestmark = pytest.mark.usefixtures("no_outside_settings")


def test_embed_device_setting_validates() -> None:
    assert Settings.model_validate({}).embed_device == "auto"
    assert Settings.load(embed_device="cpu").embed_device == "cpu"
    with pytest.raises(ConfigError, match="embed_device"):
        Settings.load(embed_device="tpu")
    assert Settings.model_fields["embed_device"].description


@pytest.mark.skipif(HAS_CUDA, reason="checks the machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_a_config_error_that_says_what_to_do() -> None:
    embedder = Embedder.from_settings(Settings.load(embed_device="cuda"))
    with pytest.raises(ConfigError, match="no CUDA GPU") as err:
        embedder.embed(["anything"])
    assert "embed_device to 'auto' or 'cpu'" in str(err.value)
    # The older torch-device setting leads to the same message.
    via_device = Embedder.from_settings(Settings.load(device="cuda"))
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        _ = via_device.dimension


@pytest.mark.skipif(HAS_CUDA, reason="checks the machine without a CUDA GPU")
def test_auto_runs_on_the_cpu_under_onnx_without_a_gpu(settings: Settings) -> None:
    embedder = Embedder.from_settings(settings)
    assert embedder.resolved_device == "cpu"
    assert not embedder.on_cuda
    assert embedder.active_runtime == "onnx"
    # Constructed directly, as before the setting existed, it stays on the CPU.
    assert Embedder().resolved_device == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_embeds_in_fp16_close_to_the_cpu_vectors(embedder: Embedder) -> None:
    import torch

    gpu = Embedder.from_settings(Settings.load(embed_device="auto"))
    assert gpu.resolved_device == "cuda" and gpu.on_cuda
    assert gpu.active_runtime == "torch"
    assert next(gpu.model.parameters()).dtype == torch.float16
    assert next(gpu.model.parameters()).device.type == "cuda"

    reference = Embedder(device="cpu").embed(TEXTS)
    vectors = gpu.embed(TEXTS, batch_size=2)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = (vectors * reference).sum(axis=1)
    assert cos.min() > 0.999, cos
    # A small batch size asked for a CPU still fills the GPU: one forward pass here.
    before = gpu.calls
    gpu.embed(TEXTS * 100, batch_size=8)
    assert gpu.calls - before == -(-len(TEXTS) * 100 // CUDA_BATCH_SIZE)
    # Batches sorted by length: the order of the answer is the order of the question.
    shuffled = gpu.embed(TEXTS[::-1])
    assert np.allclose(shuffled[::-1], vectors, atol=2e-3)
