"""How a sentence-transformers model directory embeds text, read from its files alone.

The query side runs the embedder from an ONNX file and the ``tokenizers`` library, so that a new
process answers its first question without importing torch or transformers (seconds on a small
CPU). What sentence-transformers would otherwise work out while loading the model comes from the
directory's own files: ``modules.json`` (the module chain), ``sentence_bert_config.json`` (the
input limit, lower-casing), ``1_Pooling/config.json`` (pooling, dimension), ``config.json`` and
``tokenizer_config.json`` (the fallback input limit) and ``tokenizer.json`` (the fast tokenizer).
The rules follow sentence-transformers' own loading code; the export to ONNX checks the result
against the loaded model once (``rag.retrieval.onnx_encoder.export``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Pooling modes the ONNX encoder reproduces; the others (max, weighted mean, ...) stay on torch.
POOLINGS = ("mean", "cls")
# The legacy boolean keys of a Pooling config, as sentence-transformers maps them.
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# transformers' "no limit" for a tokenizer without model_max_length.
_NO_LIMIT = int(1e30)


@dataclass(frozen=True)
class EncoderSpec:
    """A Transformer -> Pooling -> [Normalize] sentence-transformers model, as its files say."""

    model_dir: Path  # the directory of the transformer's own files (tokenizer.json, config.json)
    max_seq_length: int  # tokens read per text, special tokens included; the rest is cut
    pooling: str  # "mean" or "cls"
    dimension: int
    normalize: bool
    do_lower_case: bool

    def tokenizer(self, *, for_model: bool = True) -> Any:
        """A ``tokenizers.Tokenizer`` as sentence-transformers calls it: truncated to
        ``max_seq_length`` and padded to the longest text of a batch (``for_model``), or neither,
        to count a text's word pieces."""
        from tokenizers import Tokenizer, normalizers

        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        # tokenizer.json may carry the padding and truncation it was saved with (all-MiniLM-L6-v2:
        # pad to 128, cut at 128); transformers replaces them on every call, and so do we, once.
        tok.no_padding()
        tok.no_truncation()
        if self.do_lower_case and not _lowercases(tok.normalizer):
            steps = [normalizers.Lowercase()]
            if tok.normalizer is not None:
                steps.append(tok.normalizer)
            tok.normalizer = normalizers.Sequence(steps)
        if for_model:
            tok.enable_truncation(max_length=self.max_seq_length, strategy="longest_first")
            pad_id, pad_token = _pad_token(self.model_dir, tok)
            tok.enable_padding(pad_id=pad_id, pad_token=pad_token)
        return tok


def read_spec(source: str) -> EncoderSpec | None:
    """The spec of the model at ``source`` (a directory, or a hub name already in the local Hugging
    Face cache); None when it is not there or not of the Transformer -> Pooling(mean or cls) ->
    [Normalize] shape, or has no ``tokenizer.json``. Such models run under torch."""
    root = _local_dir(source)
    if root is None:
        return None
    try:
        return _read(root)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("%s cannot run without torch: %s", source, exc)
        return None


def _read(root: Path) -> EncoderSpec | None:
    if not (root / "modules.json").is_file():
        return _plain_transformer(root)
    modules = _json(root / "modules.json")
    kinds = [str(m["type"]).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        log.info("%s has modules %s, not Transformer -> Pooling [-> Normalize]", root, kinds)
        return None
    st_config = _json(root / "config_sentence_transformers.json", missing={})
    if st_config.get("default_prompt_name"):
        log.info("%s prepends a default prompt to every text", root)
        return None
    model_dir = root / str(modules[0].get("path") or "")
    if not (model_dir / "tokenizer.json").is_file():
        log.info("%s has no tokenizer.json", model_dir)
        return None
    pooling_config = _json(root / str(modules[1]["path"]) / "config.json")
    pooling = _pooling_mode(pooling_config)
    if pooling not in POOLINGS:
        log.info("%s pools by %s", root, pooling)
        return None
    dimension = pooling_config.get("embedding_dimension") or pooling_config.get(
        "word_embedding_dimension"
    )
    bert_config = _json(model_dir / "sentence_bert_config.json", missing={})
    return EncoderSpec(
        model_dir=model_dir,
        max_seq_length=_max_seq_length(model_dir, bert_config.get("max_seq_length")),
        pooling=pooling,
        dimension=int(dimension),
        normalize=kinds[-1] == "Normalize",
        do_lower_case=bool(bert_config.get("do_lower_case", False)),
    )


def _plain_transformer(root: Path) -> EncoderSpec | None:
    """A transformers model directory, which sentence-transformers loads with mean pooling."""
    if not (root / "config.json").is_file() or not (root / "tokenizer.json").is_file():
        return None
    return EncoderSpec(
        model_dir=root,
        max_seq_length=_max_seq_length(root, None),
        pooling="mean",
        dimension=int(_json(root / "config.json")["hidden_size"]),
        normalize=False,
        do_lower_case=False,
    )


def _pooling_mode(config: dict[str, Any]) -> str:
    mode = config.get("pooling_mode")
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode is not None:
        return mode if isinstance(mode, str) else "+".join(map(str, mode))
    active = [name for key, name in _LEGACY_POOLING.items() if config.get(key)]
    if not active:
        return "mean"  # sentence-transformers' default when no mode is switched on
    return active[0] if len(active) == 1 else "+".join(active)


def _max_seq_length(model_dir: Path, configured: Any) -> int:
    """sentence-transformers' rule: the configured ``max_seq_length``; without one, the tokenizer's
    ``model_max_length`` capped by the transformer's ``max_position_embeddings``."""
    if configured is not None:
        return int(configured)
    limit = int(_json(model_dir / "tokenizer_config.json", missing={}).get("model_max_length", 0))
    limit = limit or _NO_LIMIT
    positions = _json(model_dir / "config.json", missing={}).get("max_position_embeddings")
    if positions is not None and positions != -1:
        limit = min(limit, int(positions))
    if limit >= _NO_LIMIT:
        raise ValueError(f"{model_dir} states no input limit")
    return limit


def _pad_token(model_dir: Path, tok: Any) -> tuple[int, str]:
    """The padding token transformers would use: the tokenizer config's, else tokenizer.json's."""
    names = [
        _token_text(_json(model_dir / "tokenizer_config.json", missing={}).get("pad_token")),
        _token_text(_json(model_dir / "special_tokens_map.json", missing={}).get("pad_token")),
    ]
    for name in names:
        if name is not None and tok.token_to_id(name) is not None:
            return int(tok.token_to_id(name)), name
    padding = _json(model_dir / "tokenizer.json").get("padding") or {}
    if "pad_token" in padding:
        return int(padding.get("pad_id", 0)), str(padding["pad_token"])
    raise ValueError(f"{model_dir} names no padding token")


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _lowercases(normalizer: Any) -> bool:
    """Whether a tokenizers normalizer lower-cases (sentence-transformers' test, plus the BERT
    normalizer's own flag)."""
    if normalizer is None:
        return False
    state = json.loads(normalizer.__getstate__())
    steps = state.get("normalizers", [state]) if state.get("type") == "Sequence" else [state]
    return any(
        s.get("type") == "Lowercase" or (s.get("type") == "BertNormalizer" and s.get("lowercase"))
        for s in steps
    )


def _local_dir(source: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source.count("/") != 1:
        return None
    try:  # a hub name: its snapshot in the local cache, never a download
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:
        return None


def _json(path: Path, missing: Any = None) -> Any:
    if missing is not None and not path.is_file():
        return missing
    with path.open(encoding="utf-8") as f:
        return json.load(f)
