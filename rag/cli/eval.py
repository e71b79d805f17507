"""``rag eval``: retrieval quality on a BEIR data set, answer quality on a SQuAD-format file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rag.cli.options import llm_options as _llm_options
from rag.cli.options import settings as _settings
from rag.cli.output import print_json


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    ev = sub.add_parser("eval", parents=[common], help="measure retrieval and answer quality")
    data = ev.add_mutually_exclusive_group(required=True)
    data.add_argument("--beir", type=Path, metavar="DIR", help="BEIR data set directory")
    data.add_argument("--squad", type=Path, metavar="FILE", help="SQuAD-format JSON file")
    ev.add_argument(
        "--mode",
        dest="eval_mode",
        choices=("dense", "lexical", "hybrid", "all"),
        help="retrieval mode(s) to evaluate (default: all for --beir, hybrid for --squad)",
    )
    ev.add_argument("--limit", type=int, help="evaluate only N questions")
    ev.add_argument(
        "--answer-mode",
        dest="eval_answer_mode",
        choices=("generate", "extract", "both"),
        help="--squad: how answers are made (default: the settings' answer_mode)",
    )
    ev.add_argument(
        "--unanswerable",
        type=int,
        default=0,
        metavar="N",
        help="--squad: also ask N questions of held-out documents (deleted from a copy of the "
        "index) and the off-topic questions, and report abstention on each",
    )
    ev.add_argument("--tokenizer", help="tokenizer that counts chunk tokens (default: the LLM's)")
    _llm_options(ev, retrieval=False)
    ev.epilog = "--index names where the evaluation index is built (default: the cache)."
    ev.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from rag.eval.beir import MODES, evaluate_beir

    settings = _settings(args)
    modes = MODES if args.eval_mode in (None, "all") else (args.eval_mode,)
    if args.beir:
        results = evaluate_beir(args.beir, settings, modes, limit=args.limit, index_dir=args.index)
    else:
        from rag.eval.squad import evaluate_squad

        modes = ("hybrid",) if args.eval_mode is None else modes
        answer_modes = (
            ("generate", "extract")
            if args.eval_answer_mode == "both"
            else (args.eval_answer_mode or settings.resolved_answer_mode,)
        )
        results = evaluate_squad(
            args.squad,
            settings,
            modes,
            limit=args.limit,
            index_dir=args.index,
            answer_modes=answer_modes,
            unanswerable=args.unanswerable,
        )
    if args.json:
        print_json(results)
        return 0
    rows = [(mode, m) for mode, m in results.items() if not mode.startswith("_")]
    skip = ("queries", "seconds", "answer_mode")
    keys = [k for k in rows[0][1] if k not in skip] if rows else []
    width = max([10, *(len(mode) + 2 for mode, _ in rows)])
    # One line per metric and a column per row: the SQuAD rows have many metrics.
    print(f"{'':<30}" + "".join(f"{mode:>{width}}" for mode, _ in rows))
    for k in [*keys, "seconds"]:
        cells = "".join(f"{_cell(m.get(k)):>{width}}" for _, m in rows)
        print(f"{k:<30}{cells}")
    run = results.get("_run", {})
    if run:
        print("; ".join(f"{k}: {v}" for k, v in run.items()))
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return format(value, ".4f") if isinstance(value, float) else str(value)
