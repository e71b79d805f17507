"""``rag serve``: the index, the embedder and the model kept warm behind an HTTP API and a page."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from rag.cli.options import _number
from rag.cli.options import llm_options as _llm_options
from rag.cli.options import settings as _settings

EXIT_MISSING_EXTRA = 11


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "serve",
        parents=[common],
        help="serve an index over HTTP (OpenAI-compatible API and a page)",
        description="Serve an index: POST /v1/chat/completions (OpenAI-compatible, with "
        "citations), /v1/ask, /v1/retrieve, /v1/documents (uploads), GET /v1/index, /v1/models, "
        "/healthz, and a page at /. Binds to loopback; another address needs RAG_API_KEY, "
        "which is then required as a bearer token on every API route whatever the address.",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=_number(int, 1, 65535), default=8080, help="default 8080")
    s.add_argument("--model-name", help="the model name clients use (default rag:<index name>)")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages of ORIGIN to call the API (repeatable; default: none)")  # fmt: skip
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name clients use to reach a server without a key, besides "
                   "localhost and IP addresses (repeatable; '.example.com' allows its subdomains, "
                   "'*' any name); refused otherwise, against DNS rebinding")  # fmt: skip
    s.add_argument("--upload-dir", type=Path,
                   help="where uploaded files are kept (default: under the cache directory)")  # fmt: skip
    lim = s.add_argument_group("limits")
    lim.add_argument("--max-body-mb", type=_number(float, 0.001), default=1.0, metavar="MB",
                     help="largest JSON request (default 1)")  # fmt: skip
    lim.add_argument("--max-upload-mb", type=_number(float, 0.001), default=50.0, metavar="MB",
                     help="largest upload request, all its files together (default 50)")  # fmt: skip
    lim.add_argument("--max-files", type=_number(int, 1), default=20, metavar="N",
                     help="files in one upload (default 20)")  # fmt: skip
    lim.add_argument("--max-question-chars", type=_number(int, 1), default=4000, metavar="N",
                     help="longest question (default 4000)")  # fmt: skip
    s.add_argument("--allow-overrides", type=_override_groups, default=None, metavar="GROUPS",
                   help="what clients may change per request: groups retrieval, sampling, "
                   "answer_mode, separated by commas, or all, or none (default retrieval,sampling)")  # fmt: skip
    lim.add_argument("--max-queued-writes", type=_number(int, 1), default=16, metavar="N",
                     help="uploads and deletions that may wait for the index; more get a 429 "
                     "(default 16)")  # fmt: skip
    lim.add_argument("--header-timeout", type=_number(float, 0.1), default=10.0, metavar="S",
                     help="seconds a client may take to send a request's headers (default 10)")  # fmt: skip
    lim.add_argument("--max-tokens-limit", type=_number(int, 1), default=None, metavar="N",
                     help="most tokens a client may ask for; larger requests are lowered to it "
                     "(default: the configured max_tokens)")  # fmt: skip
    _llm_options(s, retrieval=False)
    s.add_argument("--answer-mode", choices=("auto", "generate", "extract"),
                   help="as for rag ask (default auto: generate with --llm-url, else extract)")  # fmt: skip
    s.add_argument("--mode", choices=("dense", "lexical", "hybrid"), help="retrieval mode")
    s.set_defaults(func=_cmd_serve)


def _override_groups(spec: str) -> frozenset[str]:
    from rag.serve.permissions import parse_groups

    try:
        return parse_groups(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _missing_extra() -> list[str]:
    """The serve extra's modules that cannot be imported."""
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    return missing


def _cmd_serve(args: argparse.Namespace) -> int:
    missing = [
        m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None
    ]
    if missing:
        print(
            f"error: rag serve needs {', '.join(missing)}: pip install 'rag-toolkit[serve]'",
            file=sys.stderr,
        )
        return EXIT_MISSING_EXTRA
    from rag.serve.config import MB, Limits, ServeConfig

    settings = _settings(args)
    config = ServeConfig(
        index_dir=Path(settings.index_dir),
        settings=settings,
        host=args.host,
        port=args.port,
        api_key=os.environ.get("RAG_API_KEY") or None,
        model_name=args.model_name,
        cors_origins=tuple(args.cors_origin),
        allowed_hosts=tuple(args.allowed_host),
        limits=Limits(
            max_body_bytes=int(args.max_body_mb * MB),
            max_upload_bytes=int(args.max_upload_mb * MB),
            max_files=args.max_files,
            max_question_chars=args.max_question_chars,
        ),
        upload_dir=args.upload_dir,
        max_tokens_limit=args.max_tokens_limit,
        max_queued_writes=args.max_queued_writes,
        header_timeout_s=args.header_timeout,
    )
    if args.allow_overrides is not None:
        config = dataclasses.replace(config, allow_overrides=args.allow_overrides)
    config.check()  # an exposed address without a key is refused before anything loads
    from rag.serve.server import serve

    def loaded(index: Any) -> None:
        with index.lease() as rag:
            docs, chunks = rag.store.counts()
        host = f"[{config.bind_host}]" if ":" in config.bind_host else config.bind_host
        key = "required (RAG_API_KEY)" if config.api_key else "none (loopback only)"
        print(
            f"Serving {config.index_dir} ({docs} documents, {chunks} chunks) at "
            f"http://{host}:{config.port}/ as model {config.served_model!r}; answers: "
            f"{settings.resolved_answer_mode}; API key: {key}. Ctrl-C stops.",
            flush=True,
        )

    serve(config, loaded=loaded)
    return 0
