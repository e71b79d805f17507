"""Answer evaluation on SQuAD-format data (contexts, questions, answers, unanswerable questions).

Contexts are ingested as documents; every question is answered by the full chain (retrieval,
packing, the configured LLM, citation parsing). Reported per retrieval mode:

- ``hit@k``: the answer-bearing passage is among the k passages given to the model;
- ``exact_match`` and ``f1``: SQuAD's answer metrics (normalised tokens), best over the gold answers;
- ``citation_precision``: share of cited passages that contain a gold answer;
- ``abstention_precision`` / ``abstention_recall``: on unanswerable questions (null when the data
  set has none).
"""

from __future__ import annotations

import collections
import json
import re
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.errors import ConfigError
from rag.eval.cache import cached_index, eval_index_dir


@dataclass(frozen=True)
class Question:
    qid: str
    text: str
    source: str
    answers: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]  # character spans of the answers in the context
    impossible: bool


def load_squad(path: str | Path) -> tuple[dict[str, str], list[Question]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is not a SQuAD-format JSON file: {exc}") from exc
    contexts: dict[str, str] = {}
    questions: list[Question] = []
    for a, article in enumerate(data):
        paragraphs = article["paragraphs"]
        for p, para in enumerate(paragraphs):
            context = para["context"]
            source = _paragraph_source(article, para, a, p, len(paragraphs), contexts)
            contexts[source] = context
            for qa in para["qas"]:
                texts, spans = [], []
                for ans in qa.get("answers", []):
                    text = ans["text"].strip()
                    if not text:
                        continue
                    # Some offsets are off by one around a leading space: find the stripped text.
                    start = context.find(text, max(0, int(ans["answer_start"]) - 3))
                    if start < 0:
                        start = context.find(text)
                    texts.append(text)
                    spans.append((start, start + len(text)) if start >= 0 else (-1, -1))
                questions.append(
                    Question(
                        qid=str(qa["id"]),
                        text=qa["question"],
                        source=source,
                        answers=tuple(texts),
                        spans=tuple(spans),
                        impossible=bool(qa.get("is_impossible")) or not texts,
                    )
                )
    return contexts, questions


def _paragraph_source(
    article: dict[str, Any], para: dict[str, Any], a: int, p: int, n: int, seen: dict[str, str]
) -> str:
    """A document name of its own for every paragraph, so that it is its question's gold passage.

    SQuAD v1.1/v2.0 articles hold many paragraphs under one title and no ``document_id``; keyed
    by title alone they would overwrite each other. A lone paragraph keeps its article's name.
    """
    base = str(para.get("document_id") or article.get("title") or a)
    source = base if n == 1 else f"{base}#p{p}"
    if source in seen and seen[source] != para["context"]:
        source = f"{source}#{a}-{p}"  # titles (or document ids) repeated across articles
    return source


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, truth: str) -> float:
    p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def _contains_answer(passage: Any, q: Question) -> bool:
    if Path(passage.source).name != q.source and passage.source != q.source:
        return False
    for start, end in q.spans:
        if start >= 0 and passage.start <= start and end <= passage.end:
            return True
    norm = normalize_answer(passage.text)
    return any(normalize_answer(a) and normalize_answer(a) in norm for a in q.answers)


def evaluate_squad(
    path: str | Path,
    settings: Settings,
    modes: tuple[str, ...] = ("hybrid",),
    limit: int | None = None,
    index_dir: Path | None = None,
) -> dict[str, dict[str, Any]]:
    from ingest import TextDocument
    from rag.engine import RAG

    contexts, questions = load_squad(path)
    # "paragraphs": indexes built before every paragraph became a document of its own are stale.
    index = index_dir or eval_index_dir(
        f"squad-{Path(path).stem}", Path(path), settings, "paragraphs"
    )
    started = time.perf_counter()
    cached_index(
        index, lambda: [TextDocument(source=s, text=t) for s, t in contexts.items()], settings
    )
    index_seconds = time.perf_counter() - started
    if limit:
        # A spread sample: every n-th question, so that many articles are covered.
        step = max(1, len(questions) // limit)
        questions = questions[::step][:limit]
    results: dict[str, dict[str, Any]] = {}
    with RAG.open(index, settings) as rag:
        for mode in modes:
            t0 = time.perf_counter()
            hits = em = f1 = 0.0
            cited = cited_ok = 0
            abst_tp = abst_fp = abst_fn = 0
            answerable = [q for q in questions if not q.impossible]
            for q in questions:
                answer = rag.ask(q.text, retrieval_mode=mode)
                if q.impossible:
                    abst_tp += answer.abstained
                    abst_fn += not answer.abstained
                    continue
                abst_fp += answer.abstained
                hits += any(_contains_answer(p, q) for p in answer.passages)
                if not answer.abstained:
                    em += max(
                        normalize_answer(answer.answer) == normalize_answer(a) for a in q.answers
                    )
                    f1 += max(f1_score(answer.answer, a) for a in q.answers)
                for c in answer.citations:
                    cited += 1
                    cited_ok += _contains_answer(c, q)
            n = max(len(answerable), 1)
            impossible = len(questions) - len(answerable)
            results[mode] = {
                f"hit@{settings.top_k}": round(hits / n, 4),
                "exact_match": round(em / n, 4),
                "f1": round(f1 / n, 4),
                "citation_precision": round(cited_ok / cited, 4) if cited else None,
                "abstention_precision": (
                    round(abst_tp / (abst_tp + abst_fp), 4)
                    if impossible and (abst_tp + abst_fp)
                    else None
                ),
                "abstention_recall": round(abst_tp / impossible, 4) if impossible else None,
                "abstained_on_answerable": round(abst_fp / n, 4),
                "queries": len(questions),
                "seconds": round(time.perf_counter() - t0, 1),
            }
    results["_run"] = {
        "index_seconds": round(index_seconds, 1),
        "model": settings.llm_model or "embedded",
    }
    return results
