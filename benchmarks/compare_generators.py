"""Compare small instruct models as the embedded generator on the same COVID-QA run.

Every model answers through the embedded backend (:class:`rag.llm.embedded.EmbeddedBackend`)
from the same evaluation index as ``rag eval --squad`` builds (chunks counted in the default
model's tokens, so every model reads the same passages): the quality run is exactly
``rag eval --squad ../shared/data/covidqa/200423_covidQA.json --limit 60 --unanswerable 30
--answer-mode generate`` with only the generating model changed. The speed run asks the first
``--speed N`` answerable questions of the same sample, alternating the models question by
question, so that a shared machine's load falls on all of them alike.

A model is a safetensors model directory (``NAME=DIR``); ``smollm2`` is the packaged default.
``export`` writes such a directory from a GGUF file, as the default model is unpacked, adding a
chat template when the file carries none (the Gemma 3 template for ``gemma3`` files), or, with
``--template completion``, the plain-text layout that a pretrained (not instruction-tuned) model
continues (:data:`rag.llm.default_model.COMPLETION_TEMPLATE`). ``summarize`` gives the figures of
a ``--log`` so far, for a run cut short.

    python benchmarks/compare_generators.py export gemma-3-270m-q4_k_m.gguf DIR --template completion
    python benchmarks/compare_generators.py quality --model gemma-3-270m=DIR --log a.jsonl --json q.json
    python benchmarks/compare_generators.py speed --model gemma-3-270m=DIR --speed 10 --json s.json
    python benchmarks/compare_generators.py summarize a.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rag import RAG, Settings
from rag.llm.default_model import COMPLETION_TEMPLATE
from rag.llm.embedded import EmbeddedBackend

REPO = Path(__file__).resolve().parents[1]
COVIDQA = REPO.parent / "shared" / "data" / "covidqa" / "200423_covidQA.json"

# Gemma 3's chat template (string contents only): no system role, so the system prompt opens the
# first user turn; the model's turns are "model" and end with <end_of_turn>.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') "
    "+ message['content'] | trim + '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def export(gguf: Path, target: Path, template: str | None = None) -> None:
    """Unpack ``gguf`` into ``target`` as a float32 safetensors model directory; ``template``:
    "completion" for :data:`COMPLETION_TEMPLATE` instead of the file's (or Gemma 3's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    if config.model_type.startswith("gemma3"):
        if not tok.chat_template:
            tok.chat_template = GEMMA3_TEMPLATE
        # A turn ends with <end_of_turn>, not with <eos>.
        end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
        plain.generation_config.eos_token_id = [tok.eos_token_id, end_of_turn]
    if template == "completion":
        tok.chat_template = COMPLETION_TEMPLATE
    plain.save_pretrained(str(target))
    tok.save_pretrained(str(target))


def _models(specs: list[str], settings: Settings) -> dict[str, str]:
    from rag.llm.default_model import default_model_dir

    models = {"smollm2": str(default_model_dir(settings.cache_dir))}
    for spec in specs:
        name, _, path = spec.partition("=")
        models[name] = path
    return models


def _use(name: str, path: str) -> None:
    """Make the embedded backend run the model at ``path`` (the index stays the default's)."""

    def shared(cls: type[EmbeddedBackend], settings: Settings) -> EmbeddedBackend:
        return cls(path, name, settings)

    EmbeddedBackend.shared = classmethod(shared)  # type: ignore[method-assign,assignment]


def _questions(settings: Settings) -> tuple[Path, Path, list[tuple[str, Any]]]:
    """The index, the held-out index and the questions of ``rag eval --squad --limit 60
    --unanswerable 30``, interleaved (two answerable, one held-out, one off-topic) so that a run
    cut short still reports on a sample of every kind."""
    from ingest import TextDocument
    from rag.eval.cache import cached_index, eval_index_dir
    from rag.eval.squad import _spread, load_squad
    from rag.eval.unanswerable import OFF_TOPIC_QUESTIONS, heldout_index, holdout_sources

    contexts, questions = load_squad(COVIDQA)
    index = eval_index_dir(f"squad-{COVIDQA.stem}", COVIDQA, settings, "paragraphs")
    cached_index(
        index, lambda: [TextDocument(source=s, text=t) for s, t in contexts.items()], settings
    )
    held = holdout_sources(list(contexts))
    held_set = set(held)
    heldout = heldout_index(index, held)
    answerable = [("answerable", q) for q in _spread(questions, 60)]
    held_qs = [("heldout", q) for q in _spread([q for q in questions if q.source in held_set], 30)]
    offtopic = [("offtopic", text) for text in OFF_TOPIC_QUESTIONS]
    order: list[tuple[str, Any]] = []
    while answerable or held_qs or offtopic:
        order += answerable[:2] + held_qs[:1] + offtopic[:1]
        answerable, held_qs, offtopic = answerable[2:], held_qs[1:], offtopic[1:]
    return index, heldout, order


def quality(
    models: dict[str, str], names: list[str], settings: Settings, log: Path | None
) -> dict[str, Any]:
    """The answer-quality row of ``rag eval --squad`` (same questions, same metrics) per model;
    every answer is appended to ``log`` (JSON lines) as it comes."""
    from rag.eval.squad import _contains_answer, _Tally, f1_score

    index, heldout, order = _questions(settings)
    out: dict[str, Any] = {}
    for name in names:
        _use(name, models[name])
        tally = _Tally()
        answers: list[dict[str, Any]] = []
        with RAG.open(index, settings) as full, RAG.open(heldout, settings) as held:
            for kind, q in order:
                text = q if kind == "offtopic" else q.text
                t0 = time.perf_counter()
                answer = (held if kind == "heldout" else full).ask(text, answer_mode="generate")
                elapsed = time.perf_counter() - t0
                tally.seconds += elapsed
                tally.asked += 1
                if kind == "answerable" and q.impossible:
                    tally.add_unanswerable(answer, "impossible")
                elif kind == "answerable":
                    tally.answerable_seconds += elapsed
                    tally.add_answerable(answer, q)
                else:
                    tally.add_unanswerable(answer, kind)
                row = {
                    "model": name,
                    "kind": kind,
                    "question": text,
                    "gold": q.answers[:3] if kind == "answerable" else [],
                    "answer": answer.answer,
                    "abstained": answer.abstained,
                    "citations": [c.n for c in answer.citations],
                    "citations_inferred": answer.citations_inferred,
                    "completion_tokens": answer.usage.completion_tokens,
                    "seconds": round(elapsed, 2),
                }
                if kind == "answerable":
                    # What this answer adds to the row's figures, for summing a run cut short.
                    row["hit"] = any(_contains_answer(p, q) for p in answer.passages)
                    row["f1"] = (
                        0.0
                        if answer.abstained
                        else max(f1_score(answer.answer, a) for a in q.answers)
                    )
                    row["cited_ok"] = sum(_contains_answer(c, q) for c in answer.citations)
                answers.append(row)
                if log:
                    with log.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                print(f"[{name} {tally.asked}/{len(order)}] {elapsed:.1f}s", file=sys.stderr)
        out[name] = {"metrics": tally.row(settings.top_k, "generate"), "answers": answers}
    return out


def summarize(log: Path) -> dict[str, Any]:
    """Figures of the answers logged so far, per model (a run cut short: fewer questions)."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        ans = [r for r in mine if r["kind"] == "answerable"]
        n = max(len(ans), 1)
        cited = sum(len(r["citations"]) for r in ans)
        abstained = sum(r["abstained"] for r in ans)
        row: dict[str, Any] = {
            "answerable_questions": len(ans),
            "hit@4": round(sum(r["hit"] for r in ans) / n, 4),
            "f1": round(sum(r["f1"] for r in ans) / n, 4),
            "citation_precision": round(sum(r["cited_ok"] for r in ans) / cited, 4)
            if cited
            else None,
            "abstained_on_answerable": round(abstained / n, 4),
        }
        for kind in ("heldout", "offtopic"):
            ks = [r for r in mine if r["kind"] == kind]
            hits = sum(r["abstained"] for r in ks)
            row[f"{kind}_abstention_precision"] = (
                round(hits / (hits + abstained), 4) if hits + abstained else None
            )
            row[f"{kind}_abstention_recall"] = round(hits / len(ks), 4) if ks else None
            row[f"{kind}_questions"] = len(ks)
        row["seconds_per_question"] = round(sum(r["seconds"] for r in ans) / n, 3)
        out[name] = row
    return out


def speed(models: dict[str, str], names: list[str], settings: Settings, n: int) -> dict[str, Any]:
    index, _, order = _questions(settings)
    asked = [q for kind, q in order if kind == "answerable"][:n]
    rags = {}
    for name in names:
        _use(name, models[name])
        rags[name] = RAG.open(index, settings)
        rags[name].backend  # noqa: B018 - the backend is bound now, to this model
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for i, q in enumerate(asked):
        for name in names if i % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            answer = rags[name].ask(q.text, answer_mode="generate")
            seconds = time.perf_counter() - t0
            tokens = answer.usage.completion_tokens
            per[name].append({"seconds": round(seconds, 2), "completion_tokens": tokens})
            print(f"[{name} {i + 1}] {seconds:.1f}s {tokens} tokens", file=sys.stderr)
    for r in rags.values():
        r.close()
    summary: dict[str, Any] = {}
    for name, rows in per.items():
        # The first answer of each model also loads its weights: left out of the means.
        timed = rows[1:] or rows
        secs = sum(r["seconds"] for r in timed)
        toks = sum(r["completion_tokens"] for r in timed)
        summary[name] = {
            "questions": len(timed),
            "seconds_per_question": round(secs / len(timed), 2),
            "completion_tokens_per_question": round(toks / len(timed), 1),
            "tokens_per_second": round(toks / secs, 2) if secs else None,
            "rows": rows,
        }
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="unpack a GGUF file into a model directory")
    ex.add_argument("gguf", type=Path)
    ex.add_argument("target", type=Path)
    ex.add_argument("--template", choices=("completion",), help="plain-text prompt (base models)")
    for cmd in ("quality", "speed"):
        p = sub.add_parser(cmd)
        p.add_argument("--model", action="append", default=[], metavar="NAME=DIR")
        p.add_argument("--only", action="append", metavar="NAME", help="run only these models")
        p.add_argument("--json", type=Path, help="write the results here")
        if cmd == "quality":
            p.add_argument("--log", type=Path, help="append every answer here (JSON lines)")
        if cmd == "speed":
            p.add_argument("--speed", type=int, default=10, metavar="N")
    sm = sub.add_parser("summarize", help="figures of a quality --log, also of a run cut short")
    sm.add_argument("log", type=Path)
    args = ap.parse_args()
    if args.cmd == "summarize":
        print(json.dumps(summarize(args.log), indent=1))
        return 0
    if args.cmd == "export":
        export(args.gguf, args.target, args.template)
        return 0
    settings = Settings()
    models = _models(args.model, settings)
    names = args.only or list(models)
    result = (
        quality(models, names, settings, args.log)
        if args.cmd == "quality"
        else speed(models, names, settings, args.speed)
    )
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text if args.cmd == "speed" else json.dumps({k: v["metrics"] for k, v in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
