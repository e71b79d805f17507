"""The model and retrieval options that ``rag ask``, ``rag chat`` and ``rag eval`` share.

Ranges are checked while parsing, so a bad value is a usage error (exit 2) that names the flag,
before any model or index is opened.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from rag.config import Settings
from rag.errors import ConfigError

# Spelled on the command line to switch off a setting that the config file or environment sets.
OFF = "none"


def _number(
    kind: Callable[[str], Any],
    low: float | None = None,
    high: float | None = None,
    off: bool = False,
) -> Callable[[str], Any]:
    """An argparse type: a number within [low, high] (or OFF when ``off``)."""

    def parse(text: str) -> Any:
        if off and text.strip().lower() == OFF:
            return OFF
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
            raise argparse.ArgumentTypeError(f"takes a number {bounds}, not {text}")
        return value

    return parse


def llm_options(p: argparse.ArgumentParser, retrieval: bool = True) -> None:
    """Model flags; with ``retrieval``, also the retrieval mode and filters of ask and chat.

    The retrieval tuning flags (--hybrid-alpha, --fetch-k, --mmr, --reranker, --abstain-below)
    are added in both cases, since ``rag eval`` measures them too.
    """
    g = p.add_argument_group("model")
    g.add_argument("--llm-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--llm-model", help="model name on that server")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--max-tokens", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("-k", "--top-k", type=int, help="passages to retrieve")
    g.add_argument("--context-window", type=int, help="override the model's context window")
    if retrieval:
        g.add_argument("--answer-mode", choices=("auto", "generate", "extract"),
                       help="'extract' quotes the sentences that answer, with no model call; "
                       "'generate' has the model write the answer; 'auto' (default): generate "
                       "with --llm-url, else the measured default")  # fmt: skip
    r = p.add_argument_group("retrieval")
    if retrieval:
        r.add_argument("--mode", choices=("dense", "lexical", "hybrid"), help="retrieval mode")
    r.add_argument("--hybrid-alpha", type=_number(float, 0.0, 1.0), metavar="A",
                   help="weight of the dense score in hybrid fusion, 0 to 1")  # fmt: skip
    r.add_argument("--fetch-k", type=_number(int, 1), metavar="N",
                   help="candidates each retriever contributes before fusion and MMR")  # fmt: skip
    r.add_argument("--mmr", action=argparse.BooleanOptionalAction, default=None,
                   help="diversify passages with maximal marginal relevance (--no-mmr: off)")  # fmt: skip
    r.add_argument("--reranker", metavar="MODEL",
                   help=f"CrossEncoder that reorders the best candidates ('{OFF}': no reranking)")  # fmt: skip
    r.add_argument("--abstain-below", type=_number(float, -1.0, 1.0, off=True), metavar="S",
                   help="abstain when no passage reaches this cosine similarity, -1 to 1 "
                   f"('{OFF}': never)")  # fmt: skip
    if not retrieval:
        return
    r.add_argument("--source", metavar="GLOB", help="only files matching GLOB (e.g. '*.pdf')")
    r.add_argument("--type", dest="kinds", action="append", choices=("pdf", "text", "markdown", "html", "docx"),
                   help="only files of this type (repeatable)")  # fmt: skip
    r.add_argument("--pages", metavar="A-B", help="only PDF pages A to B (1-based, A <= B)")


def settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the config file and environment, overridden by the flags that were given."""
    fields = {
        "embedder": getattr(args, "embedder", None),
        "index_dir": getattr(args, "index", None),
        "tokenizer": getattr(args, "tokenizer", None),
        "chunk_tokens": getattr(args, "chunk_tokens", None),
        "chunk_overlap": getattr(args, "chunk_overlap", None),
        "embed_batch_size": getattr(args, "batch_size", None),
        "llm_url": getattr(args, "llm_url", None),
        "llm_model": getattr(args, "llm_model", None),
        "temperature": getattr(args, "temperature", None),
        "top_p": getattr(args, "top_p", None),
        "max_tokens": getattr(args, "max_tokens", None),
        "seed": getattr(args, "seed", None),
        "top_k": getattr(args, "top_k", None),
        "context_window": getattr(args, "context_window", None),
        "retrieval_mode": getattr(args, "mode", None),  # absent on `eval`, which has its own
        "mmr": getattr(args, "mmr", None),
        "hybrid_alpha": getattr(args, "hybrid_alpha", None),
        "fetch_k": getattr(args, "fetch_k", None),
        "answer_mode": getattr(args, "answer_mode", None),  # `eval` has its own
        **extra,
    }
    # Flags that may switch a setting off: None means "not given" to Settings.load.
    switched_off: dict[str, None] = {}
    for name in ("reranker", "abstain_below"):
        value = getattr(args, name, None)
        if value == OFF:
            switched_off[name] = None
        elif value is not None:
            fields[name] = value
    result = Settings.load(args.config, **fields)
    for name, value in switched_off.items():
        setattr(result, name, value)
    return result


def filters(args: argparse.Namespace) -> Any:
    """The retrieval filters of ``--source``, ``--type`` and ``--pages``; None when none given."""
    from rag.retrieval.retriever import Filters

    pages = None
    if args.pages:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", args.pages)
        if not m:
            raise ConfigError(f"--pages takes a page or a range like 3-7, not {args.pages!r}")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if first < 1:
            raise ConfigError(f"--pages counts pages from 1, not {args.pages!r}")
        if first > last:
            raise ConfigError(
                f"--pages {args.pages}: the first page comes after the last; "
                f"did you mean --pages {last}-{first}?"
            )
        pages = (first, last)
    kinds = tuple(args.kinds) if args.kinds else None
    f = Filters(source_glob=args.source, kinds=kinds, pages=pages)
    return None if f.is_empty() else f
