"""Answer evaluation on SQuAD-format data (contexts, questions, answers, unanswerable questions).

Contexts are ingested as documents; every question is answered by the full chain (retrieval,
packing, then the configured LLM and citation parsing, or extraction). Reported per retrieval
mode and answer mode (``generate`` or ``extract``):

- ``hit@k``: the answer-bearing passage is among the k passages the answer was made from (in
  extract mode the larger of ``top_k`` and ``extract_top_k``);
- ``exact_match`` and ``f1``: SQuAD's answer metrics (normalised tokens), best over the gold
  answers, counting abstentions on answerable questions as wrong;
- ``sentence_accuracy``: the chosen sentence bears the answer: in extract mode the best quote's
  span overlaps a gold answer span by at least half of the shorter; in generate mode the answer
  holds at least half of a gold answer's tokens;
- ``citation_precision``: share of citations that hold the answer: quoted spans (as above) in
  extract mode, cited passages in generate mode; ``passage_citation_precision``: cited passages
  in both modes;
- ``abstention_precision`` / ``abstention_recall``: on the data's unanswerable questions (null
  when it has none), and ``heldout_*`` / ``offtopic_*`` on those of :mod:`rag.eval.unanswerable`;
  precision counts abstentions on answerable questions as false;
- ``seconds_per_question``: wall time of ``RAG.ask`` per answerable question (abstentions on
  weak passages skip the model and would flatter generate mode); ``seconds``: all questions.
"""

from __future__ import annotations

import collections
import json
import re
import string
import time
from dataclasses import dataclass, field
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


def _tokens_recalled(text: str, answer: str) -> float:
    """Share of the gold answer's normalised tokens that ``text`` holds."""
    gold = normalize_answer(answer).split()
    if not gold:
        return 0.0
    common = collections.Counter(normalize_answer(text).split()) & collections.Counter(gold)
    return sum(common.values()) / len(gold)


def _bears_answer(text: str, q: Question) -> bool:
    """The text holds at least half of a gold answer's tokens."""
    return any(_tokens_recalled(text, a) >= 0.5 for a in q.answers)


def quote_holds_answer(quote: Any, q: Question) -> bool:
    """A quoted span and a gold answer span of the same document overlap by at least half of the
    shorter of the two (an answer inside the sentence, or a sentence inside a longer answer);
    or the quote holds a gold answer's text, wherever it comes from."""
    if Path(quote.source).name == q.source or quote.source == q.source:
        for start, end in q.spans:
            shared = min(end, quote.doc_end) - max(start, quote.doc_start)
            shorter = min(end - start, quote.doc_end - quote.doc_start)
            if start >= 0 and shared > 0 and shared >= 0.5 * shorter:
                return True
    norm = normalize_answer(quote.text)
    return any(normalize_answer(a) and normalize_answer(a) in norm for a in q.answers)


@dataclass
class _Tally:
    """Counts of one evaluated (retrieval mode, answer mode)."""

    answerable: int = 0
    hits: float = 0.0
    em: float = 0.0
    f1: float = 0.0
    sentence_ok: int = 0
    cited: int = 0
    cited_ok: int = 0
    passages_cited: int = 0
    passages_cited_ok: int = 0
    abstained_answerable: int = 0
    # Unanswerable questions by kind ("impossible": the data's own): [asked, abstained].
    unanswerable: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
    answerable_seconds: float = 0.0
    asked: int = 0

    def add_answerable(self, answer: Any, q: Question) -> None:
        self.answerable += 1
        self.hits += any(_contains_answer(p, q) for p in answer.passages)
        self.abstained_answerable += answer.abstained
        for c in answer.citations:
            self.passages_cited += 1
            self.passages_cited_ok += _contains_answer(c, q)
        if answer.abstained:
            return
        self.em += max(normalize_answer(answer.answer) == normalize_answer(a) for a in q.answers)
        self.f1 += max(f1_score(answer.answer, a) for a in q.answers)
        if answer.mode == "extract":
            # The chosen sentence (the best quote), and every quoted span as a citation.
            self.sentence_ok += bool(answer.quotes) and quote_holds_answer(answer.quotes[0], q)
            self.cited += len(answer.quotes)
            self.cited_ok += sum(quote_holds_answer(x, q) for x in answer.quotes)
        else:
            self.sentence_ok += _bears_answer(answer.answer, q)

    def add_unanswerable(self, answer: Any, kind: str) -> None:
        counts = self.unanswerable.setdefault(kind, [0, 0])
        counts[0] += 1
        counts[1] += answer.abstained

    def row(self, top_k: int, answer_mode: str) -> dict[str, Any]:
        n = max(self.answerable, 1)
        ok, total = (
            (self.cited_ok, self.cited)
            if answer_mode == "extract"
            else (self.passages_cited_ok, self.passages_cited)
        )
        out: dict[str, Any] = {
            "answer_mode": answer_mode,
            f"hit@{top_k}": round(self.hits / n, 4),
            "exact_match": round(self.em / n, 4),
            "f1": round(self.f1 / n, 4),
            "sentence_accuracy": round(self.sentence_ok / n, 4),
            "citation_precision": _ratio(ok, total),
            "passage_citation_precision": _ratio(self.passages_cited_ok, self.passages_cited),
            "abstained_on_answerable": round(self.abstained_answerable / n, 4),
        }
        for kind in ("impossible", "heldout", "offtopic"):
            if kind != "impossible" and kind not in self.unanswerable:
                continue
            asked, abstained = self.unanswerable.get(kind, (0, 0))
            prefix = "abstention" if kind == "impossible" else f"{kind}_abstention"
            out[f"{prefix}_precision"] = (
                _ratio(abstained, abstained + self.abstained_answerable) if asked else None
            )
            out[f"{prefix}_recall"] = _ratio(abstained, asked)
            if kind != "impossible":
                out[f"{kind}_questions"] = asked
        out["queries"] = self.asked
        out["seconds_per_question"] = round(self.answerable_seconds / n, 3)
        out["seconds"] = round(self.seconds, 1)
        return out


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def _spread(questions: list[Question], limit: int | None) -> list[Question]:
    """A spread sample: every n-th question, so that many articles are covered."""
    if not limit:
        return questions
    step = max(1, len(questions) // limit)
    return questions[::step][:limit]


def evaluate_squad(
    path: str | Path,
    settings: Settings,
    modes: tuple[str, ...] = ("hybrid",),
    limit: int | None = None,
    index_dir: Path | None = None,
    answer_modes: tuple[str, ...] = ("generate",),
    unanswerable: int = 0,
) -> dict[str, dict[str, Any]]:
    """Answer quality per retrieval mode and answer mode (rows keyed ``mode``, or
    ``mode/answer_mode`` when several answer modes are compared).

    With ``unanswerable`` (a number of questions), also asks that many questions of held-out
    documents of a copy of the index without them, and the off-topic questions (see
    :mod:`rag.eval.unanswerable`), and reports abstention on each kind.
    """
    from ingest import TextDocument
    from rag.engine import RAG
    from rag.eval.unanswerable import OFF_TOPIC_QUESTIONS, heldout_index, holdout_sources

    contexts, questions = load_squad(path)
    # "paragraphs": indexes built before every paragraph became a document of its own are stale.
    index = index_dir or eval_index_dir(
        f"squad-{Path(path).stem}", Path(path), settings, "paragraphs"
    )
    started = time.perf_counter()
    cached_index(
        index, lambda: [TextDocument(source=s, text=t) for s, t in contexts.items()], settings
    )
    asked = _spread(questions, limit)
    extra: list[tuple[str, Path, list[str]]] = []
    if unanswerable:
        held = holdout_sources(list(contexts))
        heldout = heldout_index(index, held)
        held_set = set(held)
        held_questions = _spread([q for q in questions if q.source in held_set], unanswerable)
        extra.append(("heldout", heldout, [q.text for q in held_questions]))
        extra.append(("offtopic", index, list(OFF_TOPIC_QUESTIONS)))
    index_seconds = time.perf_counter() - started
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        for answer_mode in answer_modes:
            tally = _Tally()
            call: dict[str, Any] = {"retrieval_mode": mode, "answer_mode": answer_mode}
            with RAG.open(index, settings) as rag:
                for q in asked:
                    t0 = time.perf_counter()
                    answer = rag.ask(q.text, **call)
                    elapsed = time.perf_counter() - t0
                    tally.seconds += elapsed
                    tally.asked += 1
                    if q.impossible:
                        tally.add_unanswerable(answer, "impossible")
                    else:
                        tally.answerable_seconds += elapsed
                        tally.add_answerable(answer, q)
            for kind, kind_index, texts in extra:
                with RAG.open(kind_index, settings) as rag:
                    for text in texts:
                        t0 = time.perf_counter()
                        answer = rag.ask(text, **call)
                        tally.seconds += time.perf_counter() - t0
                        tally.asked += 1
                        tally.add_unanswerable(answer, kind)
            key = mode if len(answer_modes) == 1 else f"{mode}/{answer_mode}"
            # Extract mode reads more passages than a prompt holds (Settings.extract_top_k).
            resolved = settings.model_copy(update={"answer_mode": answer_mode})
            read = settings.top_k
            if resolved.resolved_answer_mode == "extract":
                read = max(settings.top_k, settings.extract_top_k)
            results[key] = tally.row(read, answer_mode)
    results["_run"] = {
        "index_seconds": round(index_seconds, 1),
        "model": settings.llm_model or "embedded",
        "extract_min_score": settings.extract_min_score,
        "extract_top_k": settings.extract_top_k,
    }
    return results
