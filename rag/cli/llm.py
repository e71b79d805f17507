"""``rag llm ...``: export the default model, serve it with vLLM, check a server."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from rag.config import Settings


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``llm`` command group to the ``rag`` parser."""
    llm = sub.add_parser("llm", help="serve or check an LLM server")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True, metavar="LLM_COMMAND")

    exp = llm_sub.add_parser(
        "export-default",
        parents=[common],
        help="write the embedded default model as a safetensors directory vLLM can serve",
    )
    exp.add_argument("directory", type=Path, metavar="DIR", help="where to write the model")
    exp.set_defaults(func=_cmd_export)

    serve = llm_sub.add_parser(
        "serve",
        parents=[common],
        help="start a vLLM OpenAI-compatible server and print its URL (Ctrl-C stops it)",
        description="Start vLLM's OpenAI-compatible server, wait until it answers and print the "
        "base URL for --llm-url. Arguments after -- go to vLLM unchanged.",
    )
    serve.add_argument(
        "--model", help="model directory or name (default: the embedded default model, exported)"
    )
    serve.add_argument("--served-model-name", help="name clients use (default: the model's)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    serve.add_argument(
        "--max-model-len",
        type=int,
        default=4096,
        help="context length (default 4096, Llama 2's; 0: the model's own)",
    )
    serve.add_argument(
        "--enforce-eager",
        action="store_true",
        help="skip vLLM's graph compilation: starts about 3x faster, serves batches slower",
    )
    serve.add_argument(
        "--kv-cache-gib",
        type=float,
        help="memory for the KV cache in GiB (default on a CPU build: 1; on a GPU: vLLM's own)",
    )
    serve.add_argument("--log", type=Path, help="server log file (default: in the cache dir)")
    serve.add_argument(
        "--start-timeout", type=float, default=600.0, help="seconds to wait for the server"
    )
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    serve.set_defaults(func=_cmd_serve)

    check = llm_sub.add_parser(
        "check",
        parents=[common],
        help="show the models a server serves, their context length and whether /tokenize works",
    )
    check.add_argument("--llm-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    check.set_defaults(func=_cmd_check)


def _settings(args: argparse.Namespace, **fields: Any) -> Settings:
    return Settings.load(args.config, **fields)


def _cmd_export(args: argparse.Namespace) -> int:
    from rag.llm.default_model import DEFAULT_MODEL_NAME, export_default_model

    target = Path(args.directory).expanduser()
    existed = (target / "config.json").is_file()
    if not existed and not args.json:
        print(f"Exporting the embedded default model to {target} ...", file=sys.stderr)
    path = export_default_model(target)
    if args.json:
        print(json.dumps({"directory": str(path), "name": DEFAULT_MODEL_NAME, "existed": existed}))
        return 0
    print(f"{'Already there' if existed else 'Exported'}: {path}")
    print(f"Serve it with: rag llm serve --model {path} --served-model-name {DEFAULT_MODEL_NAME}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from rag.llm.serve import (
        CPU_KV_CACHE_BYTES,
        VLLMServer,
        free_port,
        is_cpu_build,
        resolve_vllm_python,
    )

    settings = _settings(args)
    python = resolve_vllm_python(settings)
    if args.model:
        model = args.model
        name = args.served_model_name or args.model
    else:
        from rag.llm.default_model import DEFAULT_MODEL_NAME, default_model_dir

        print("Preparing the embedded default model (exported once) ...", file=sys.stderr)
        model = str(default_model_dir(settings.cache_dir))
        name = args.served_model_name or DEFAULT_MODEL_NAME
    port = args.port or free_port(args.host)
    if args.kv_cache_gib is not None:
        kv_bytes: int | None = int(args.kv_cache_gib * (1 << 30))
    else:
        kv_bytes = CPU_KV_CACHE_BYTES if is_cpu_build(python) else None
    log_path = args.log or settings.cache_dir / "logs" / f"vllm-{port}.log"
    extra = [a for a in args.vllm_args if a != "--"]
    server = VLLMServer(
        python,
        model,
        name,
        host=args.host,
        port=port,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        kv_cache_bytes=kv_bytes,
        extra_args=extra,
        log_path=Path(log_path),
    )
    # Ctrl-C and `kill PID` both stop the server cleanly; SIGINT is set explicitly because a
    # shell starts background jobs with it ignored.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(
            f"Starting vLLM ({python}) serving {model} as {name!r}; server pid {server.pid}, "
            f"log {log_path}",
            file=sys.stderr,
        )
        url = server.wait_ready(args.start_timeout)
        if args.json:
            print(json.dumps({"url": url, "model": name, "pid": server.pid}), flush=True)
        else:
            print(url, flush=True)
            print(
                f"Ready. Use: rag ask QUESTION --llm-url {url} --llm-model {name}\n"
                "Press Ctrl-C to stop the server.",
                file=sys.stderr,
                flush=True,
            )
        code = server.wait()
        print(
            f"error: the vLLM server exited (code {code}). Last lines of {log_path}:\n"
            f"{server.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        for sig in previous:  # a second Ctrl-C must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        print("\nStopping the vLLM server ...", file=sys.stderr, flush=True)
        server.stop()
        print("Stopped.", file=sys.stderr)
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _cmd_check(args: argparse.Namespace) -> int:
    from rag.errors import LLMUnavailable
    from rag.llm.openai_server import check_server

    report = check_server(_settings(args, llm_url=args.llm_url))
    if args.json:
        data = {
            "url": report.url,
            "models": [vars(m) for m in report.models],
            "tokenizer": {"ok": report.tokenizer_ok, "detail": report.tokenizer_detail},
        }
        print(json.dumps(data, indent=2))
    else:
        print(f"Server {report.url}")
        for m in report.models:
            length = m.max_model_len if m.max_model_len else "not reported"
            print(f"  model {m.id}: context length {length}")
        if not report.models:
            print("  serves no model")
        state = "answers" if report.tokenizer_ok else "does not answer"
        print(f"  /tokenize {state}: {report.tokenizer_detail}")
    if report.models and report.tokenizer_ok:
        return 0
    return LLMUnavailable.exit_code
