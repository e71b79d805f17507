"""Float vs int8 embedder: retrieval quality and CPU embedding throughput, side by side.

For each precision ("float": the ONNX export of the embedder; "int8": the same model dynamically
quantized by ONNX Runtime, ``embed_quantize = "int8"``) the script

1. builds (or reuses) an index of each BEIR data set through the real ingest pipeline, exactly as
   ``rag eval --beir`` does, and reports nDCG@10 for dense, lexical and hybrid retrieval;
2. builds an index of a SQuAD-format data set (COVID-QA by default; not BEIR-style, so it is scored
   here on retrieval alone, no LLM): hit@4 and MRR@10 of the first passage that holds an answer;
3. times embedding of a sample of the BEIR data set's real chunk texts on the CPU, float and int8
   alternating, and reports chunks/s (median over rounds).

Run from the repository root:

    python benchmarks/embedder_int8.py                        # SciFact + COVID-QA
    python benchmarks/embedder_int8.py --sample 500 --rounds 3 --json int8.json

The float indexes are the ones ``rag eval`` caches; the int8 ones are cached beside them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.config import Settings  # noqa: E402
from rag.eval.beir import MODES, build_index, evaluate_beir, load_beir  # noqa: E402
from rag.eval.cache import cached_index, eval_index_dir  # noqa: E402
from rag.eval.squad import Question, load_squad, normalize_answer  # noqa: E402
from rag.index.reader import Store  # noqa: E402
from rag.retrieval.embeddings import Embedder  # noqa: E402
from rag.retrieval.onnx_encoder import QUANTIZE_VERSION  # noqa: E402
from rag.retrieval.retriever import Retriever  # noqa: E402

DATA = (REPO / ".." / "shared" / "data").resolve()
PRECISIONS = ("none", "int8")
LABEL = {"none": "float", "int8": "int8"}


def settings_for(quantize: str) -> Settings:
    return Settings.model_validate({"embed_quantize": quantize})


def index_for(name: str, data_file: Path, settings: Settings, variant: str) -> Path:
    """The float index is the one ``rag eval`` caches; int8 gets a variant of its own, so that a
    cache key without the quantization cannot hand it the float index."""
    if settings.embed_quantize != "none":
        # With the recipe's version: an index of an older int8 recipe is not reused.
        variant = f"{variant}|quantize={settings.embed_quantize}-q{QUANTIZE_VERSION}"
    return eval_index_dir(name, data_file, settings, variant)


def check_built_with(index: Path, embedder: Embedder) -> None:
    with Store.open(index) as store:
        found = store.manifest.embedder
    if found != embedder.name:
        raise SystemExit(f"{index} holds {found!r} vectors, expected {embedder.name!r}")


def beir_quality(root: Path) -> dict[str, dict[str, Any]]:
    data = load_beir(root)
    out: dict[str, dict[str, Any]] = {}
    for q in PRECISIONS:
        settings = settings_for(q)
        index = index_for(data.corpus.parent.name or "beir", data.corpus, settings, "")
        started = time.perf_counter()
        build_index(data, settings, index=index)
        built = time.perf_counter() - started
        check_built_with(index, Embedder.from_settings(settings))
        metrics = evaluate_beir(root, settings, MODES, index_dir=index)
        out[q] = {m: metrics[m]["ndcg@10"] for m in MODES}
        out[q]["index_seconds"] = round(built, 1)
        out[q]["index"] = str(index)
    return out


def _holds_answer(record: Any, q: Question) -> bool:
    if record.source != q.source:
        return False
    if any(s >= 0 and record.start <= s and e <= record.end for s, e in q.spans):
        return True
    text = normalize_answer(record.text)
    return any(normalize_answer(a) and normalize_answer(a) in text for a in q.answers)


def squad_retrieval(path: Path, limit: int | None) -> dict[str, dict[str, Any]]:
    from ingest import TextDocument

    contexts, questions = load_squad(path)
    questions = [q for q in questions if not q.impossible]
    if limit:
        questions = questions[:: max(1, len(questions) // limit)][:limit]
    out: dict[str, dict[str, Any]] = {}
    for q in PRECISIONS:
        settings = settings_for(q)
        # The same index `rag eval --squad` builds (one document per paragraph).
        index = index_for(f"squad-{path.stem}", path, settings, "paragraphs")
        started = time.perf_counter()
        cached_index(
            index, lambda: [TextDocument(source=s, text=t) for s, t in contexts.items()], settings
        )
        built = time.perf_counter() - started
        embedder = Embedder.from_settings(settings)
        check_built_with(index, embedder)
        out[q] = {"index_seconds": round(built, 1), "questions": len(questions)}
        with Store.open(index) as store:
            for mode in MODES:
                retriever = Retriever(
                    store=store, embedder=embedder, mode=mode, hybrid_alpha=settings.hybrid_alpha
                )
                hit4 = mrr = 0.0
                for question in questions:
                    hits = retriever.search(question.text, 10)
                    first = next(
                        (i for i, h in enumerate(hits) if _holds_answer(h[0], question)), None
                    )
                    if first is not None:
                        mrr += 1.0 / (first + 1)
                        hit4 += first < 4
                n = max(len(questions), 1)
                out[q][f"{mode} hit@4"] = round(hit4 / n, 4)
                out[q][f"{mode} mrr@10"] = round(mrr / n, 4)
    return out


def chunk_sample(index: Path, n: int, seed: int = 0) -> list[str]:
    texts: list[str] = []
    with Store.open(index) as store:
        for seg in store.segments:
            texts += [row[0] for row in seg.db.execute("SELECT text FROM chunks ORDER BY id")]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def throughput(texts: list[str], rounds: int, batch_size: int) -> dict[str, Any]:
    embedders = {q: Embedder.from_settings(settings_for(q)) for q in PRECISIONS}
    for e in embedders.values():
        assert e.resolved_device == "cpu", "the comparison is on the CPU"
        e.embed(texts[:16], batch_size=batch_size)  # load, export/quantize once, warm up
    rates: dict[str, list[float]] = {q: [] for q in PRECISIONS}
    order = list(PRECISIONS)
    for _ in range(rounds):
        for q in order:
            t0 = time.perf_counter()
            embedders[q].embed(texts, batch_size=batch_size)
            rates[q].append(len(texts) / (time.perf_counter() - t0))
        order.reverse()  # float, int8, int8, float, ...: drift in machine load hits both
    return {
        q: {
            "chunks_per_s": round(statistics.median(r), 1),
            "runs": [round(x, 1) for x in r],
            "runtime": embedders[q].active_runtime,
        }
        for q, r in rates.items()
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beir", type=Path, action="append", help="BEIR data set (repeatable)")
    ap.add_argument("--squad", type=Path, default=DATA / "covidqa" / "200423_covidQA.json")
    ap.add_argument("--no-squad", action="store_true", help="skip the SQuAD-format data set")
    ap.add_argument("--squad-limit", type=int, default=None, help="questions (spread sample)")
    ap.add_argument("--sample", type=int, default=2000, help="chunk texts timed per round")
    ap.add_argument("--rounds", type=int, default=4, help="timed rounds per precision")
    ap.add_argument("--batch-size", type=int, default=Settings.model_validate({}).embed_batch_size)
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    beirs = args.beir or [DATA / "scifact" / "derived_beir_style"]

    results: dict[str, Any] = {"beir": {}, "squad": {}}
    for root in beirs:
        results["beir"][root.parent.name if root.name.startswith("derived") else root.name] = (
            beir_quality(root)
        )
    if not args.no_squad and args.squad.is_file():
        results["squad"][args.squad.stem] = squad_retrieval(args.squad, args.squad_limit)
    first = next(iter(results["beir"].values()))
    texts = chunk_sample(Path(first["none"]["index"]), args.sample)
    results["throughput"] = throughput(texts, args.rounds, args.batch_size)
    results["throughput"]["texts"] = len(texts)

    print(f"{'':34}{'float':>10}{'int8':>10}{'int8-float':>12}{'ratio':>9}")
    for name, res in results["beir"].items():
        for mode in MODES:
            f, i = res["none"][mode], res["int8"][mode]
            print(f"{name + ' nDCG@10 ' + mode:34}{f:>10.4f}{i:>10.4f}{i - f:>+12.4f}{i / f:>9.3f}")
    for name, res in results["squad"].items():
        keys = [k for k in res["none"] if "@" in k]
        for k in keys:
            f, i = res["none"][k], res["int8"][k]
            print(f"{name + ' ' + k:34}{f:>10.4f}{i:>10.4f}{i - f:>+12.4f}{i / f:>9.3f}")
    tp = results["throughput"]
    f, i = tp["none"]["chunks_per_s"], tp["int8"]["chunks_per_s"]
    label = f"embed chunks/s ({tp['texts']} chunks)"
    print(f"{label:34}{f:>10.1f}{i:>10.1f}{i - f:>+12.1f}{_ratio(i, f):>9}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
