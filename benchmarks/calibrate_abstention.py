"""Choose the abstention threshold (``abstain_below``) from data.

Two real indexes, each queried with questions it can answer and questions it cannot:

- the shared documents (papers, READMEs, essays): the 21 benchmark questions about them are
  answerable; COVID-QA questions and SciFact claims are not;
- SciFact (5,183 abstracts): its 300 test claims are answerable (each has a relevant abstract);
  COVID-QA questions (biomedical too: hard negatives) and the document questions are not.

For every question the best dense cosine among the retrieved passages is recorded; the threshold
that maximises balanced accuracy (mean of the answer rate on answerable and the abstention rate on
unanswerable questions) over both indexes is reported with the rates it gives.

    python benchmarks/calibrate_abstention.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from ingest_vs_langchain import QUESTIONS  # noqa: E402

from ingest import ingest  # noqa: E402
from rag import RAG, Settings  # noqa: E402
from rag.eval.beir import build_index, load_beir  # noqa: E402
from rag.retrieval.embeddings import Embedder  # noqa: E402


def best_cosines(rag: RAG, questions: list[str]) -> list[float]:
    out = []
    for q in questions:
        hits = rag.retrieve(q, k=4, retrieval_mode="hybrid")
        out.append(max((h.similarity or -1.0) for h in hits) if hits else -1.0)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = Settings.model_validate({})
    embedder = Embedder.from_settings(settings)
    rng = random.Random(0)

    covid = json.loads((DATA / "covidqa" / "200423_covidQA.json").read_text())["data"]
    covid_q = [qa["question"] for a in covid for p in a["paragraphs"] for qa in p["qas"]]
    covid_q = rng.sample(covid_q, 100)
    beir = load_beir(DATA / "scifact" / "derived_beir_style")
    claims = list(beir.queries.values())
    doc_q = [q for q, _ in QUESTIONS]

    with tempfile.TemporaryDirectory() as tmp:
        ingest([DATA / "documents"], Path(tmp) / "docs", settings, embedder=embedder)
        docs = RAG.open(Path(tmp) / "docs", settings, embedder=embedder)
        pos = best_cosines(docs, doc_q)
        neg = best_cosines(docs, covid_q + rng.sample(claims, 100))
    scifact = RAG.open(build_index(beir, settings), settings, embedder=embedder)
    pos += best_cosines(scifact, claims)
    neg += best_cosines(scifact, covid_q + doc_q)

    p, n = np.array(pos), np.array(neg)
    rows = []
    for t in np.arange(0.10, 0.61, 0.025):
        answered = float((p >= t).mean())
        abstained = float((n < t).mean())
        rows.append((round(float(t), 3), answered, abstained, (answered + abstained) / 2))
    best = max(rows, key=lambda r: r[3])
    print(f"answerable: {len(p)} questions, unanswerable: {len(n)}")
    print(
        f"best cosine  answerable median {np.median(p):.3f}, unanswerable median {np.median(n):.3f}"
    )
    print(f"{'threshold':>10} {'answered (pos)':>15} {'abstained (neg)':>16} {'balanced':>9}")
    for t, a, b, bal in rows:
        mark = "  <- best" if (t, a, b, bal) == best else ""
        print(f"{t:>10.3f} {a:>15.3f} {b:>16.3f} {bal:>9.3f}{mark}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "best": best}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
